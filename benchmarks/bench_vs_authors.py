"""A whole DynamicPO training step, the authors' way and recpo's way, side by side.

One preference-optimization step is: policy forward and backward, reference
forward, boundary selection, β, the loss, and an AdamW step. It runs on the same
model, the same batches and the same optimizer settings, in two ways:

* ``authors``: a re-implementation of what the official code does (not that code).
  Each of the 1+K answers is concatenated with the full prompt, giving a
  right-padded batch of B·(1+K) rows (every chosen row, then every first
  negative, ...). The model computes its full-vocabulary log-softmax at every
  position, and log-probs are summed over the answer labels. The reference is a
  second, frozen copy of the model (the base weights, under LoRA). Selection and
  β are done one example at a time, with ``.item()`` and
  ``sklearn.cluster.KMeans(3)`` on the host (:func:`common.authors_select_and_beta`).
  The DMPO-DynamicPO loss −log σ(Σ_{j∈B} β_j (r_w − r_j) / |B|) is built example
  by example.
* ``recpo``: :class:`~recpo.training.preference.PreferenceModule`. It uses
  shared-prompt scoring. The reference is the policy with its adapter disabled
  (LoRA) or a frozen copy (full fine-tuning). The objective is
  :data:`~recpo.objectives.plugin.dynamicpo` (the batched exact selector).
* ``recpo+compile``: the same, with the objective under ``torch.compile``
  (:class:`~recpo.objectives.compiled.CompiledObjective`).

Before any timing, the ways are checked against each other on the first batch.
The policy log-probs of the two scorings must agree. The per-example losses must
agree wherever sklearn's clustering selects the same negatives as the exact
solver. The compiled objective must agree with the eager one.

Parts (``--parts``, all by default):

* ``step``: each way at each of ``--batch-sizes``, interleaved (the order flips
  every repeat). Reports examples/s, tokens/s and peak memory.
* ``largest``: the largest batch each way fits under ``--memory-cap-gib``. The
  search predicts it from the memory measured at the smallest batch, then
  verifies it with one measured step and shrinks it while it does not fit. The
  footprint is the weights the way holds (the policy, its own reference copy,
  AdamW's state) plus the step's peak. A CUDA out-of-memory error also counts as
  not fitting.
* ``accumulate``: effective batch 32 as one batch of 32 and as 4 × 8 gradient
  accumulation (8 micro-batches of 4, one optimizer step), each way.
* ``objective``: the objective alone (forward, plus backward to the log-probs),
  each call right after an untimed forward of the model. Timed for the authors'
  per-example loop and for recpo's eager and compiled DMPO and DynamicPO. This
  gives DynamicPO's own cost.

Tokens: ``example tok/s`` counts each example's real prompt tokens once plus
all its answer tokens, the same count for both ways. ``model tok/s`` counts the
non-pad positions the policy actually runs; the authors' way repeats each
prompt 1+K times.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the step above
what was allocated at its start. On a CPU, the torch profiler's allocator events
(:func:`common.cpu_peak_mib`) over one extra, untimed step: tensor memory above
the step's start, not the process RSS.

FLOPs (printed on every device; MFU only on a GPU whose peak is known, or with
``--peak-tflops``). N_body is the decoder's parameters without the input
embedding (LoRA included); N_head is the LM head's. A forward costs
2·N_body per position run, plus 2·N_head per position where the head is
applied: every padded position for the authors, only the real answer tokens
for recpo. The trained policy counts 3× its forward (6·N: forward + backward,
the usual convention; with LoRA the frozen weights get no weight gradient, so
the real work is nearer 4·N). The reference counts 1× (2·N). The forward
recomputed under gradient checkpointing (2·N_body per position) is counted
separately: MFU leaves it out, HFU includes it. Attention's own FLOPs are not
counted.

Models: ``--backbone NAME`` loads ``conf/backbone/NAME.yaml`` through
:func:`recpo.models.backbone.load_backbone`, with data from real LastFM when
present (else the synthetic dataset); ``tiny`` is the default and
``smollm2_135m`` is the pretrained SmolLM2-135M-Instruct, skipped with a message
when that backbone is not available. ``--shape`` uses random weights of a known
shape instead (``llama2-7b``, ``smollm2-135m``) with the dataset's byte-level
BPE tokenizer; ``--lengths-from`` replaces the data with random ids of real
lengths (for a GPU machine without the data).

Examples::

    python benchmarks/bench_vs_authors.py                          # tiny, CPU, ~4 min
    python benchmarks/bench_vs_authors.py --backbone smollm2_135m --batch-sizes 1 \\
        --parts step objective
    python benchmarks/bench_vs_authors.py --device cuda --dtype bfloat16 --shape llama2-7b \\
        --lora --gradient-checkpointing --compile-mode reduce-overhead
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    BATCH_KEYS,
    SHAPES,
    add_data_arguments,
    add_lora,
    authors_select_and_beta,
    build_model,
    cpu_peak_mib,
    dataset_tokenizers,
    default_cache_dir,
    load_average,
    load_backbone_model,
    load_datamodule,
    machine_description,
    make_synthetic_batch,
    parameter_bytes,
    sample_rows,
    sklearn_available,
    split_parameters,
    synchronize,
    timed,
)
from torch import Tensor, nn

from recpo.objectives.compiled import CompiledObjective
from recpo.objectives.losses import dmpo
from recpo.objectives.plugin import dynamicpo
from recpo.objectives.types import PreferenceLogps

PARTS = ("step", "largest", "accumulate", "objective")
WAYS = ("authors", "recpo", "recpo+compile")
# Standard deviation of the noise that moves the policy off the reference before the check.
CHECK_NOISE = 0.01
# Dense bf16 tensor-core peaks (TFLOP/s) by a substring of the device name; the
# first match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--backbone", default="tiny", help="conf/backbone/<name>.yaml")
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), help="random weights of this shape (not --backbone)"
    )
    parser.add_argument(
        "--tokenizer",
        choices=["title", "bpe"],
        help="tiny backbone / --shape tokenizer (default: title for tiny, bpe for --shape)",
    )
    parser.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    parser.add_argument("--lora", action="store_true", help="LoRA r=8, alpha=32, all projections")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--k", type=int, default=15, help="negatives per example")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument(
        "--ways",
        nargs="+",
        default=list(WAYS),
        choices=WAYS,
        help="the ways the parts run (the check before them compares authors and recpo)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per way and batch")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per way and batch")
    parser.add_argument("--batches", type=int, default=2, help="distinct batches, cycled")
    parser.add_argument(
        "--memory-cap-gib",
        type=float,
        help="memory a way may use (default: 2 on a CPU, where the largest batches must run"
        " in minutes; on a GPU its memory less 2 GiB)",
    )
    parser.add_argument("--max-batch", type=int, default=512, help="upper end of the search")
    parser.add_argument(
        "--large-repeats",
        type=int,
        default=2,
        help="timed updates at the largest batch and per accumulation setting",
    )
    parser.add_argument("--micro-batch", type=int, default=4, help="accumulation micro-batch")
    parser.add_argument("--accumulation", type=int, default=8, help="micro-batches per update")
    parser.add_argument("--objective-repeats", type=int, default=20)
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the memory update of the step part"
    )
    parser.add_argument("--compile-mode", help="torch.compile mode (default: its default)")
    parser.add_argument("--no-compile", action="store_true", help="skip recpo+compile")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on a CPU)")
    add_data_arguments(parser)
    parser.add_argument(
        "--lengths-from",
        type=Path,
        help="random ids with the token lengths of this JSON (bench_scoring --export-lengths)",
    )
    parser.add_argument("--cache-dir", type=Path, help="default: $RECPO_CACHE_DIR, else .cache")
    parser.add_argument("--model-dir", help="paths.model_dir for pretrained backbones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.tokenizer is None:
        args.tokenizer = "bpe" if args.shape else "title"
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.objective_repeats < 1:
        parser.error("batch sizes and repeats must be at least 1")
    if not 1 <= args.k <= 19:
        parser.error("--k must be in 1..19 (20 candidates per row)")
    if args.lengths_from is not None and not args.shape:
        parser.error("--lengths-from needs --shape (a backbone has its own tokenizer)")
    return args


# ---------------------------------------------------------------------------- data


class Batches:
    """Batches of any size: the first rows of a seeded draw of training rows (real
    ids), or random ids of lengths resampled from a lengths file."""

    def __init__(self, args: argparse.Namespace, datamodule: Any, vocab_size: int):
        self.args = args
        self.datamodule = datamodule
        self.vocab_size = vocab_size
        self.rows: list[Any] = []
        self.spec = None
        if args.lengths_from is not None:
            lengths = json.loads(args.lengths_from.read_text())
            if args.tokenizer not in lengths:
                sys.exit(f"{args.lengths_from} holds no {args.tokenizer!r} lengths")
            self.spec = lengths[args.tokenizer]

    def __call__(self, size: int, index: int = 0) -> dict[str, Tensor]:
        """Batch ``index`` of ``size`` examples (rows ``index*size`` to ``(index+1)*size``)."""
        device = self.args.device
        if self.spec is not None:
            tensors = make_synthetic_batch(
                self.spec, size, self.args.k + 1, self.vocab_size, self.args.seed + index, device
            )
            return dict(zip(BATCH_KEYS, tensors))
        needed = (index + 1) * size
        if needed > len(self.rows):
            wanted = max(needed, 2 * len(self.rows))
            self.rows = sample_rows(self.datamodule, wanted, self.args.seed)
            if needed > len(self.rows):
                sys.exit(f"the training split has {len(self.rows)} rows; {needed} needed")
        batch = self.datamodule.collator(self.rows[index * size : needed])
        return {key: batch[key].to(device) for key in BATCH_KEYS}


def authors_inputs(batch: dict[str, Tensor]) -> dict[str, Any]:
    """The authors' batch: B·(1+K) rows ``[prompt | answer]``, right-padded.

    Rows are ordered answer by answer (all chosen rows, then every first negative,
    ...), as a concatenated chosen/rejected batch is; labels are -100 on the prompt
    and the padding. Built on the host outside the timed step, like a collator.
    """
    prompt_ids, prompt_mask = batch["prompt_ids"].cpu(), batch["prompt_mask"].cpu().bool()
    answer_ids, answer_mask = batch["answer_ids"].cpu(), batch["answer_mask"].cpu().bool()
    size, answers, _ = answer_ids.shape
    if not answer_mask.any(-1).all():
        raise ValueError("authors-style batches need every answer present")
    rows, labels = [], []
    for j in range(answers):
        for i in range(size):
            prompt = prompt_ids[i][prompt_mask[i]]
            answer = answer_ids[i, j][answer_mask[i, j]]
            rows.append(torch.cat([prompt, answer]))
            labels.append(torch.cat([torch.full_like(prompt, -100), answer]))
    length = max(len(row) for row in rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    label_ids = torch.full((len(rows), length), -100, dtype=torch.long)
    for r, (row, label) in enumerate(zip(rows, labels)):
        input_ids[r, : len(row)] = row
        attention_mask[r, : len(row)] = 1
        label_ids[r, : len(row)] = label
    device = batch["prompt_ids"].device
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": label_ids.to(device),
        "shape": (size, answers),
    }


@dataclass
class BatchCounts:
    """Token and position counts of one update's batches, for throughput and FLOPs."""

    examples: int = 0
    example_tokens: int = 0  # real prompt tokens once + every answer's tokens
    authors_tokens: int = 0  # real tokens of the B·(1+K) concatenated rows
    authors_positions: int = 0  # B·(1+K) rows × their padded length
    recpo_positions: int = 0  # B × (padded prompt + (1+K) × padded answer)
    answer_tokens: int = 0  # real answer tokens (where recpo applies the head)

    @classmethod
    def of(cls, batch: dict[str, Tensor]) -> BatchCounts:
        prompt = batch["prompt_mask"].sum(-1)  # (B,)
        answers = batch["answer_mask"].sum(-1)  # (B, N)
        size, num, answer_len = batch["answer_ids"].shape
        rows = prompt[:, None] + answers  # the authors' row lengths
        return cls(
            examples=size,
            example_tokens=int(prompt.sum() + answers.sum()),
            authors_tokens=int(rows.sum()),
            authors_positions=size * num * int(rows.max()),
            recpo_positions=size * (batch["prompt_ids"].shape[1] + num * answer_len),
            answer_tokens=int(answers.sum()),
        )

    def __add__(self, other: BatchCounts) -> BatchCounts:
        names = self.__dataclass_fields__
        return BatchCounts(**{n: getattr(self, n) + getattr(other, n) for n in names})


# ---------------------------------------------------------------------------- the two ways


def authors_logps(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
    """``(B, N)`` summed answer log-probs, full-vocabulary log-softmax at every position."""
    logits = model(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
    ).logits.float()
    labels = inputs["labels"][:, 1:].clone()
    logits = logits[:, :-1]
    keep = labels != -100
    labels[~keep] = 0
    token_logps = logits.log_softmax(-1).gather(2, labels[..., None]).squeeze(2)
    size, answers = inputs["shape"]
    return (token_logps * keep).sum(-1).view(answers, size).T


def authors_dynamicpo(
    logps: PreferenceLogps, *, beta: float, alpha: float, gamma: float
) -> tuple[Tensor, list[list[int]]]:
    """``(B,)`` DMPO-DynamicPO losses built one example at a time, and the selections."""
    selections, betas, _ = authors_select_and_beta(
        logps.policy_chosen.detach(),
        logps.policy_rejected.detach(),
        beta0=beta,
        alpha=alpha,
        gamma=gamma,
    )
    chosen = logps.policy_chosen - logps.ref_chosen
    rejected = logps.policy_rejected - logps.ref_rejected
    losses = []
    for i, (selected, row_betas) in enumerate(zip(selections, betas)):
        logit = sum(b * (chosen[i] - rejected[i, k]) for k, b in zip(selected, row_betas))
        losses.append(-F.logsigmoid(logit / len(selected)))
    return torch.stack(losses), selections


@dataclass
class Way:
    """One way of doing the step, training the shared policy with its own AdamW.

    Attributes:
        name: the table's label.
        prepare: batch -> the way's inputs (untimed: a collator's work).
        logps: inputs -> :class:`PreferenceLogps` (policy with grad, reference without).
        loss: inputs -> the batch's scalar loss.
        optimizer: AdamW over the policy's trainable parameters.
        own_bytes: weights the way holds besides the policy (its reference copy).
        state_bytes: AdamW's two moments of the trainable parameters.
        positions: counts -> positions the model runs (padded).
        head_positions: counts -> positions where the LM head is applied.
        model_tokens: counts -> real (non-pad) tokens the policy runs.
    """

    name: str
    prepare: Callable[[dict[str, Tensor]], Any]
    logps: Callable[[Any], PreferenceLogps]
    loss: Callable[[Any], Tensor]
    optimizer: torch.optim.Optimizer
    own_bytes: int
    state_bytes: int
    positions: Callable[[BatchCounts], int]
    head_positions: Callable[[BatchCounts], int]
    model_tokens: Callable[[BatchCounts], int]

    def step(self, inputs: Any, *, scale: float = 1.0, update: bool = True) -> None:
        (self.loss(inputs) * scale).backward()
        if update:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def hyperparameters() -> dict[str, float]:
    """β0, α and γ of recpo's DynamicPO (its defaults), used by both ways."""
    return {name: getattr(dynamicpo, name) for name in ("beta", "alpha", "gamma")}


def make_ways(
    args: argparse.Namespace,
    policy: nn.Module,
    reference_base: nn.Module,
    compiled: CompiledObjective | None,
) -> tuple[list[Way], Any]:
    """The authors' way, recpo's, and recpo's with ``compiled`` (when given), all
    training ``policy``. Returns the ways and recpo's PreferenceModule."""
    from recpo.training.preference import PreferenceModule

    hyper = hyperparameters()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    state_bytes = 2 * sum(p.numel() * p.element_size() for p in trainable)
    reference_base.eval().requires_grad_(False)

    def authors_preference_logps(inputs: dict[str, Any]) -> PreferenceLogps:
        policy_logps = authors_logps(policy, inputs)
        with torch.no_grad():
            ref = authors_logps(reference_base, inputs)
        return PreferenceLogps(policy_logps[:, 0], policy_logps[:, 1:], ref[:, 0], ref[:, 1:])

    def authors_loss(inputs: dict[str, Any]) -> Tensor:
        return authors_dynamicpo(authors_preference_logps(inputs), **hyper)[0].mean()

    ways = [
        Way(
            "authors",
            authors_inputs,
            authors_preference_logps,
            authors_loss,
            torch.optim.AdamW(trainable, lr=args.lr),
            parameter_bytes(reference_base),
            state_bytes,
            positions=lambda c: c.authors_positions,
            head_positions=lambda c: c.authors_positions,
            model_tokens=lambda c: c.authors_tokens,
        )
    ]
    module = PreferenceModule(
        policy,
        objective=dynamicpo,
        optimizer=functools.partial(torch.optim.AdamW, lr=args.lr),
        scoring="shared",
        reference="disable_adapter" if args.lora else "copy",
    ).to(args.device)
    module.train()
    own = 0 if module.ref_model is None else parameter_bytes(module.ref_model)
    objectives: dict[str, Any] = {"recpo": dynamicpo}
    if compiled is not None:
        objectives["recpo+compile"] = compiled
    for name, objective in objectives.items():

        def recpo_loss(batch: dict[str, Tensor], objective: Any = objective) -> Tensor:
            module.objective = objective
            return module.training_step(batch, 0)

        ways.append(
            Way(
                name,
                lambda batch: batch,
                module.preference_logps,
                recpo_loss,
                torch.optim.AdamW(trainable, lr=args.lr),
                own,
                state_bytes,
                positions=lambda c: c.recpo_positions,
                head_positions=lambda c: c.answer_tokens,
                model_tokens=lambda c: c.example_tokens,
            )
        )
    return ways, module


# ---------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One way at one batch size, ``accumulation`` micro-batches per update."""

    way: Way
    size: int
    accumulation: int = 1
    label: str = ""
    seconds: list[float] = field(default_factory=list)
    peak_mib: float | None = None
    footprint_gib: float | None = None
    oom: bool = False
    skipped: str = ""
    counts: BatchCounts = field(default_factory=BatchCounts)
    flops: dict[str, float] = field(default_factory=dict)

    @property
    def examples(self) -> int:
        return self.size * self.accumulation

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self) -> dict[str, Any]:
        out = {
            "way": self.way.name,
            "batch": self.size,
            "accumulation": self.accumulation,
            "seconds": self.seconds,
            "peak_mib": self.peak_mib,
            "footprint_gib": self.footprint_gib,
            "oom": self.oom,
            "skipped": self.skipped,
            "counts": self.counts.__dict__,
            "flops": self.flops,
        }
        if self.seconds:
            out["examples_per_s"] = self.examples / self.median
        return out


@dataclass
class Context:
    """What every part needs."""

    args: argparse.Namespace
    ways: list[Way]
    module: Any
    batches: Batches
    policy_bytes: int
    n_body: int
    n_head: int
    cap_gib: float
    peak_tflops: float | None
    # The smallest batch measured so far per way: (batch, peak MiB), for predictions.
    measured: dict[str, tuple[int, float]] = field(default_factory=dict)

    def way(self, name: str) -> Way:
        return next(w for w in self.ways if w.name == name)

    def selected(self) -> list[Way]:
        """The ways ``--ways`` asks the parts to run."""
        return [w for w in self.ways if w.name in self.args.ways]

    def fixed_gib(self, way: Way) -> float:
        """Weights and optimizer state the way holds between steps."""
        return (self.policy_bytes + way.own_bytes + way.state_bytes) / 2**30


def step_flops(way: Way, counts: BatchCounts, ctx: Context) -> dict[str, float]:
    """Model FLOPs of one update (see the module doc)."""
    forward = 2 * (ctx.n_body * way.positions(counts) + ctx.n_head * way.head_positions(counts))
    recompute = 2 * ctx.n_body * way.positions(counts) if ctx.args.gradient_checkpointing else 0
    return {"trained": 3 * forward, "reference": forward, "recompute": recompute}


def peak_step_mib(step: Callable[[], None], device: str) -> float:
    """Peak tensor memory of ``step`` above the memory held at its start (MiB)."""
    if device == "cuda":
        synchronize(device)
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    return cpu_peak_mib(step)


def release(ctx: Context) -> None:
    """Free what an out-of-memory step left behind (called once its frames are gone)."""
    for way in ctx.ways:
        way.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(runs: list[Run], ctx: Context, *, repeats: int, warmup: int, memory: bool) -> None:
    """Time ``runs`` interleaved (the order flips every repeat), then measure each
    one's peak memory in one extra update. A run that runs out of memory is marked
    and left out of the later repeats."""
    args = ctx.args
    prepared: dict[int, list[Any]] = {}
    for run in runs:
        count = run.accumulation if run.accumulation > 1 else args.batches
        raw = [ctx.batches(run.size, i) for i in range(count)]
        prepared[id(run)] = [run.way.prepare(b) for b in raw]
        for b in raw[: run.accumulation]:
            run.counts = run.counts + BatchCounts.of(b)
        run.flops = step_flops(run.way, run.counts, ctx)

    def update(run: Run, first: int) -> None:
        inputs = prepared[id(run)]
        for m in range(run.accumulation):
            last = m == run.accumulation - 1
            run.way.step(inputs[(first + m) % len(inputs)], scale=1 / run.accumulation, update=last)

    def attempt(run: Run, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except torch.OutOfMemoryError:
            run.oom = True
        release(ctx)
        return None

    active = [run for run in runs if not run.skipped]
    for repeat in range(warmup + repeats):
        for run in active if repeat % 2 == 0 else active[::-1]:
            seconds = attempt(
                run, lambda run=run, first=repeat: timed(lambda: update(run, first), args.device)
            )
            if seconds is not None and repeat >= warmup:
                run.seconds.append(seconds)
        active = [run for run in active if not run.oom]
    if memory:
        for run in active:
            peak = attempt(run, lambda run=run: peak_step_mib(lambda: update(run, 0), args.device))
            if peak is not None:
                run.peak_mib = peak
                run.footprint_gib = ctx.fixed_gib(run.way) + peak / 1024
                known = ctx.measured.get(run.way.name)
                if known is None or run.size < known[0]:
                    ctx.measured[run.way.name] = (run.size, peak)


# ---------------------------------------------------------------------------- printing


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_runs(title: str, runs: list[Run], ctx: Context, baseline: str | None = None) -> None:
    """One table: each run's update time, throughput, memory, FLOP rate and speedup
    in examples/s over the authors' run labelled ``baseline``, else over the authors'
    run with as many examples per update (else the table's first authors run)."""
    utilisation = " | MFU | HFU" if ctx.peak_tflops else " | model GFLOP/s"
    columns = 13 if ctx.peak_tflops else 12
    print(f"\n### {title}\n")
    print(
        "| way | batch | update ms median | best | examples/s | example tok/s | model tok/s"
        f" | peak MiB | footprint GiB | TFLOP/update{utilisation} | vs authors |"
    )
    print("|" + "---|" * columns)
    authors = [r for r in runs if r.way.name == "authors" and r.seconds]
    for run in runs:
        name = run.label or run.way.name
        if not run.seconds:
            why = "out of memory" if run.oom else run.skipped or "not run"
            print(f"| {name} | {run.size} | {why} |" + " - |" * (columns - 3))
            continue
        median, counts = run.median, run.counts
        model_flops = run.flops["trained"] + run.flops["reference"]
        if ctx.peak_tflops:
            peak = ctx.peak_tflops * 1e12 * median
            hardware = model_flops + run.flops["recompute"]
            utilisation = f" | {100 * model_flops / peak:.1f}% | {100 * hardware / peak:.1f}%"
        else:
            utilisation = f" | {model_flops / median / 1e9:.1f}"
        same = [r for r in authors if r.label == baseline] if baseline else []
        same = same or [r for r in authors if r.examples == run.examples] or authors
        speedup = (
            f"{(run.examples / median) / (same[0].examples / same[0].median):.1f}x" if same else "-"
        )
        print(
            f"| {name} | {run.size if run.accumulation == 1 else f'{run.size} x {run.accumulation}'}"
            f" | {median * 1e3:.1f} | {min(run.seconds) * 1e3:.1f}"
            f" | {run.examples / median:.2f} | {counts.example_tokens / median:.0f}"
            f" | {run.way.model_tokens(counts) / median:.0f} | {fmt(run.peak_mib)}"
            f" | {fmt(run.footprint_gib, '.2f')} | {model_flops / 1e12:.3f}{utilisation}"
            f" | {speedup} |"
        )
    sys.stdout.flush()


# ---------------------------------------------------------------------------- the parts


def check_agreement(ctx: Context, compiled: CompiledObjective | None) -> dict[str, Any]:
    """Both ways on the first batch, before any step: log-probs, selections, losses,
    and the compiled objective against the eager one (its first call compiles)."""
    from recpo.objectives.selection import select_boundary_negatives

    batch = ctx.batches(min(ctx.args.batch_sizes), 0)
    authors = ctx.way("authors")
    # At the start the policy equals the reference and every log-ratio is 0: move
    # it off first, or the losses would agree whatever the ways computed.
    generator = torch.Generator(device=ctx.args.device).manual_seed(ctx.args.seed)
    with torch.no_grad():
        for p in ctx.module.model.parameters():
            if p.requires_grad:
                noise = torch.randn(p.shape, generator=generator, device=p.device)
                p.add_(CHECK_NOISE * noise.to(p.dtype))
    with torch.no_grad():
        theirs = authors.logps(authors.prepare(batch))
        ours = ctx.module.preference_logps(batch)
    pairs = [
        ("policy_chosen", theirs.policy_chosen, ours.policy_chosen),
        ("policy_rejected", theirs.policy_rejected, ours.policy_rejected),
        ("ref_chosen", theirs.ref_chosen, ours.ref_chosen),
        ("ref_rejected", theirs.ref_rejected, ours.ref_rejected),
    ]
    logp_diff = max(float((a - b).abs().max()) for _, a, b in pairs)
    their_losses, their_selection = authors_dynamicpo(theirs, **hyperparameters())
    our_losses = dynamicpo(ours).losses
    selected = select_boundary_negatives(ours.policy_rejected, ours.policy_chosen, ours.mask)
    same = [
        sorted(their_selection[i]) == selected.selected[i].nonzero().flatten().tolist()
        for i in range(len(their_selection))
    ]
    loss_diff = max(
        (float((their_losses[i] - our_losses[i]).abs()) for i in range(len(same)) if same[i]),
        default=math.nan,
    )
    ratios = torch.cat(
        [ours.policy_chosen - ours.ref_chosen, (ours.policy_rejected - ours.ref_rejected).flatten()]
    )
    result = {
        "rows": len(same),
        "max_abs_logratio": float(ratios.abs().max()),
        "losses": our_losses.tolist(),
        "max_abs_logp_diff": logp_diff,
        "rows_same_selection": sum(same),
        "max_abs_loss_diff_same_selection": loss_diff,
    }
    print(
        f"\ncheck (batch {len(same)}, policy = reference + N(0, {CHECK_NOISE}) noise on the"
        f" trainable weights, log-ratios up to {result['max_abs_logratio']:.2f}):"
        f" |log-prob authors - recpo| <= {logp_diff:.1e} (policy and reference);"
        f" selections identical on {sum(same)}/{len(same)} rows (elsewhere sklearn's single"
        f" k-means++ start missed the optimal clustering); on those rows the losses"
        f" ({float(our_losses.min()):.4f}..{float(our_losses.max()):.4f}) differ by <= {loss_diff:.1e}"
    )
    if compiled is not None:
        leaves = PreferenceLogps(
            ours.policy_chosen.detach().requires_grad_(),
            ours.policy_rejected.detach().requires_grad_(),
            ours.ref_chosen,
            ours.ref_rejected,
            ours.chosen_tokens,
            ours.rejected_tokens,
            ours.mask,
        )
        start = time.perf_counter()
        compiled_losses = compiled(leaves).losses
        compile_s = time.perf_counter() - start
        eager_losses = dynamicpo(leaves).losses
        diff = float((compiled_losses - eager_losses).detach().abs().max())
        result.update(compile_seconds=compile_s, max_abs_compiled_loss_diff=diff)
        print(
            f"check: compiled DynamicPO (mode {compiled.mode or 'default'}) vs eager:"
            f" |loss difference| <= {diff:.1e}; first call (compilation) {compile_s:.1f} s"
        )
    sys.stdout.flush()
    return result


def part_step(ctx: Context) -> list[Run]:
    runs = []
    for size in ctx.args.batch_sizes:
        batch_runs = [Run(way, size) for way in ctx.selected()]
        measure(
            batch_runs,
            ctx,
            repeats=ctx.args.repeats,
            warmup=ctx.args.warmup,
            memory=not ctx.args.no_memory,
        )
        print_runs(f"one step at batch {size}, K = {ctx.args.k}", batch_runs, ctx)
        runs += batch_runs
    return runs


def round_batch(size: float) -> int:
    """Down to a multiple of 4 (of 1 below 4)."""
    return int(size) if size < 4 else int(size) // 4 * 4


def measured_peak(way: Way, ctx: Context) -> tuple[int, float] | None:
    """``(batch, peak MiB)`` of the smallest batch measured for ``way``; one update at
    the micro-batch is measured first when there is none (None: it ran out of memory)."""
    if way.name not in ctx.measured:
        measure([Run(way, ctx.args.micro_batch)], ctx, repeats=0, warmup=0, memory=True)
    return ctx.measured.get(way.name)


def largest_batch(way: Way, ctx: Context) -> tuple[int | None, list[dict]]:
    """The largest batch whose footprint fits the cap.

    The peak memory per example of the last measured batch predicts the largest
    batch; one update at that size measures it; the prediction is redone from the
    new measurement, growing while it fits and shrinking while it does not (at
    most five measured updates, up to ``--max-batch``).
    """
    args, fixed = ctx.args, ctx.fixed_gib(way)
    start = measured_peak(way, ctx)
    if start is None:
        return None, [{"batch": args.micro_batch, "footprint_gib": None, "fits": False}]
    start_size, start_peak = start

    def predict(peak_mib: float, size: int) -> int:
        per_example_gib = max(peak_mib, 1e-3) / 1024 / size
        return round_batch(min(args.max_batch, (ctx.cap_gib - fixed) / per_example_gib))

    start_footprint = fixed + start_peak / 1024
    start_fits = start_footprint <= ctx.cap_gib
    # The measured batch counts as tried: it is not measured again.
    tried: list[dict] = [
        {
            "batch": start_size,
            "peak_mib": start_peak,
            "footprint_gib": start_footprint,
            "fits": start_fits,
        }
    ]
    best = start_size if start_fits else None
    size = predict(start_peak, start_size)
    if size < 1:  # even the measured batch is over the cap
        return None, tried
    while size >= 1 and len(tried) < 6 and all(t["batch"] != size for t in tried):
        probe = Run(way, size)
        measure([probe], ctx, repeats=0, warmup=0, memory=True)
        fits = probe.footprint_gib is not None and probe.footprint_gib <= ctx.cap_gib
        tried.append(
            {
                "batch": size,
                "peak_mib": probe.peak_mib,
                "footprint_gib": probe.footprint_gib,
                "fits": fits,
            }
        )
        if fits:
            best = max(best or 0, size)
            size = predict(probe.peak_mib, size)
            if size <= best * 1.125 and best < args.max_batch <= size:
                size = args.max_batch  # one more try at the upper end
            elif size <= best * 1.125:  # less than an eighth more: done
                break
        else:
            if probe.peak_mib is None:  # out of memory: a quarter smaller
                size = round_batch(size * 0.75)
            else:
                size = min(predict(probe.peak_mib, size), round_batch(size - 1))
            if best is not None and size <= best:
                break
    return best, tried


def part_largest(ctx: Context) -> tuple[list[Run], dict]:
    ways = [w for w in ctx.selected() if w.name != "recpo+compile"]
    searches, runs = {}, []
    for way in ways:
        size, tried = largest_batch(way, ctx)
        capped = size is not None and size >= ctx.args.max_batch
        searches[way.name] = {"largest": size, "tried": tried, "capped_by_max_batch": capped}
        tries = ", ".join(
            f"{t['batch']}: {fmt(t.get('footprint_gib'), '.2f')} GiB {'fits' if t['fits'] else 'too big'}"
            for t in tried
        )
        note = f" (--max-batch {ctx.args.max_batch} reached)" if capped else ""
        print(f"largest batch, {way.name}: {size}{note}; tried {tries}", flush=True)
        run = Run(way, size or ctx.args.micro_batch)
        if size is None:
            run.skipped = f"no batch fits {ctx.cap_gib:.1f} GiB"
        else:  # the memory measured by the search
            fitting = next(t for t in tried if t["batch"] == size)
            run.peak_mib, run.footprint_gib = fitting["peak_mib"], fitting["footprint_gib"]
        runs.append(run)
    # The search's updates at these sizes were the warm-up (a CUDA allocator still
    # gets one more, to settle its cache).
    warmup = 1 if ctx.args.device == "cuda" else 0
    measure(runs, ctx, repeats=ctx.args.large_repeats, warmup=warmup, memory=False)
    print_runs(
        f"the largest batch each way fits under {ctx.cap_gib:.1f} GiB, K = {ctx.args.k}", runs, ctx
    )
    return runs, searches


def part_accumulate(ctx: Context) -> list[Run]:
    """Effective batch micro x accumulation as one batch and as accumulation."""
    args = ctx.args
    big = args.micro_batch * args.accumulation
    runs = []
    for way in [w for w in ctx.selected() if w.name != "recpo+compile"]:
        whole = Run(way, big, label=f"{way.name}, one batch")
        start = measured_peak(way, ctx)
        if start is not None:
            predicted = ctx.fixed_gib(way) + start[1] / 1024 * big / start[0]
            if predicted > ctx.cap_gib:
                whole.skipped = f"over the cap (predicted {predicted:.1f} GiB)"
        runs += [whole, Run(way, args.micro_batch, args.accumulation, f"{way.name}, accumulated")]
    measure(runs, ctx, repeats=args.large_repeats, warmup=1, memory=True)
    print_runs(
        f"effective batch {big}: one batch of {big} vs {args.micro_batch} x {args.accumulation}"
        f" accumulation, K = {args.k} (vs authors: over the authors' accumulated run)",
        runs,
        ctx,
        baseline="authors, accumulated",
    )
    ours = {r.label: r for r in runs if r.way.name == "recpo" and r.seconds}
    whole, accumulated = ours.get("recpo, one batch"), ours.get("recpo, accumulated")
    if whole and accumulated:
        gain = accumulated.median / whole.median
        print(
            f"\nrecpo: one batch of {big} is {gain:.2f}x the speed of {args.micro_batch} x"
            f" {args.accumulation} accumulation ({'faster' if gain > 1 else 'not faster'})"
        )
    return runs


def part_objective(
    ctx: Context, compiled: CompiledObjective | None, step_runs: list[Run]
) -> dict[str, Any]:
    """The objective alone, each call after an untimed forward (as in training)."""
    args = ctx.args
    hyper = hyperparameters()
    objectives: dict[str, Callable[[PreferenceLogps], Tensor]] = {
        "authors (per-example, sklearn)": lambda logps: authors_dynamicpo(logps, **hyper)[0],
        "DMPO eager": lambda logps: dmpo(logps).losses,
        "DynamicPO eager": lambda logps: dynamicpo(logps).losses,
    }
    if compiled is not None:
        compiled_dmpo = CompiledObjective(dmpo, mode=args.compile_mode)
        objectives["DMPO compiled"] = lambda logps: compiled_dmpo(logps).losses
        objectives["DynamicPO compiled"] = lambda logps: compiled(logps).losses
    batch = ctx.batches(args.micro_batch, 0)
    names = list(objectives)
    times: dict[str, list[float]] = {name: [] for name in names}

    def call(name: str, logps: PreferenceLogps) -> None:
        loss = objectives[name](logps).mean()
        torch.autograd.grad(loss, [logps.policy_chosen, logps.policy_rejected])

    for repeat in range(1 + args.objective_repeats):  # the first round compiles / warms up
        for name in names if repeat % 2 == 0 else names[::-1]:
            logps = ctx.module.preference_logps(batch)
            seconds = timed(functools.partial(call, name, logps), args.device)
            if repeat > 0:
                times[name].append(seconds)
            del logps
    recpo_step = [r for r in step_runs if r.way.name == "recpo" and r.size == args.micro_batch]
    step_ms = recpo_step[0].median * 1e3 if recpo_step and recpo_step[0].seconds else None
    print(
        f"\n### the objective alone (forward + backward to the log-probs), batch"
        f" {args.micro_batch}, K = {args.k}, {args.objective_repeats} calls each\n"
    )
    print("| objective | ms median | ms best | share of the recpo step |")
    print("|---|---|---|---|")
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name in names:
        share = f"{100 * medians[name] / step_ms:.2f}%" if step_ms else "-"
        print(f"| {name} | {medians[name]:.3f} | {min(times[name]) * 1e3:.3f} | {share} |")
    result: dict[str, Any] = {"times": times, "recpo_step_ms": step_ms}
    best = {name: min(t) * 1e3 for name, t in times.items()}
    for how in ("eager", "compiled"):
        if f"DynamicPO {how}" not in medians:
            continue
        for stat, values in (("median", medians), ("best", best)):
            gap = values[f"DynamicPO {how}"] - values[f"DMPO {how}"]
            share = f" = {100 * gap / step_ms:+.3f}% of the recpo step" if step_ms else ""
            print(f"DynamicPO over DMPO ({how}, {stat}s): {gap:+.3f} ms{share}")
            result[f"dynamicpo_overhead_ms_{how}_{stat}"] = gap
    sys.stdout.flush()
    return result


# ---------------------------------------------------------------------------- set-up


def load_model(args: argparse.Namespace) -> tuple[nn.Module, Any, Any, str, bool] | None:
    """``(model without LoRA, tokenizer, datamodule, data description, prompt_bos)``;
    None (after saying why) when the backbone cannot be loaded."""
    from recpo.errors import BackboneError

    datamodule, tokenizer, prompt_bos = None, None, True
    if args.lengths_from is not None:
        description = f"random ids, token lengths resampled from {args.lengths_from}"
    else:
        datamodule, description = load_datamodule(
            args.data_dir, args.synthetic, args.cache_dir, args.k, args.seed
        )
    if args.shape:
        vocab_size = SHAPES[args.shape].get("vocab_size", 8000)
        if datamodule is not None:
            tokenizer = dataset_tokenizers(datamodule, [args.tokenizer])[args.tokenizer]
            if len(tokenizer) > vocab_size:
                sys.exit(f"the {args.tokenizer} tokenizer has more tokens than {vocab_size}")
        model = build_model(args, vocab_size, lora=False)
    else:
        try:
            model, tokenizer, cfg = load_backbone_model(
                args.backbone,
                datamodule,
                cache_dir=args.cache_dir,
                model_dir=args.model_dir,
                dtype=args.dtype,
                attn=args.attn,
                gradient_checkpointing=args.gradient_checkpointing,
                tokenizer=args.tokenizer,
            )
        except (FileNotFoundError, BackboneError, ImportError, OSError) as err:
            print(f"# skipped: backbone {args.backbone!r} is not available here: {err}")
            return None
        prompt_bos = bool(cfg.get("prompt_bos", True))
        model = model.to(args.device)
    if datamodule is not None:
        datamodule.set_tokenizer(tokenizer, prompt_bos=prompt_bos)
    return model, tokenizer, datamodule, description, prompt_bos


def peak_tflops(args: argparse.Namespace) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if args.device != "cuda" or args.dtype != "bfloat16":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is None and args.device == "cpu":
        args.threads = 1  # stable timings on a shared machine (see bench_scoring.py)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.cache_dir = args.cache_dir or default_cache_dir()
    # training_step logs through self.log, which only warns without a Trainer.
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing_enable.*deprecated")
    if args.memory_cap_gib is None:
        args.memory_cap_gib = (
            torch.cuda.get_device_properties(0).total_memory / 2**30 - 2
            if args.device == "cuda"
            else 2.0
        )

    loaded = load_model(args)
    if loaded is None:
        return
    base, tokenizer, datamodule, data_description, _ = loaded
    # The authors' second model: a frozen copy of the base weights (= the policy at
    # the start, LoRA's update being zero then).
    reference_base = copy.deepcopy(base)
    policy = add_lora(base) if args.lora else base
    vocab_size = policy.get_input_embeddings().weight.shape[0]
    compiled = None if args.no_compile else CompiledObjective(dynamicpo, mode=args.compile_mode)
    ways, module = make_ways(args, policy, reference_base, compiled)
    n_body, n_head = split_parameters(policy)
    ctx = Context(
        args=args,
        ways=ways,
        module=module,
        batches=Batches(args, datamodule, vocab_size),
        policy_bytes=parameter_bytes(policy),
        n_body=n_body,
        n_head=n_head,
        cap_gib=args.memory_cap_gib,
        peak_tflops=peak_tflops(args),
    )
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    model_name = f"random {args.shape}" if args.shape else f"backbone {args.backbone}"
    print(
        f"# whole-step benchmark, authors vs recpo: {model_name}, lora={args.lora},"
        f" dtype={args.dtype}, attn={args.attn}, gradient checkpointing"
        f" {args.gradient_checkpointing}; N_body {n_body:,}, N_head {n_head:,},"
        f" trainable {trainable:,}; vocabulary {vocab_size:,}"
    )
    print(f"# device: {machine_description(args.device)}; {load_average()} at the start")
    if not sklearn_available():
        print(
            "# NOTE: scikit-learn is not installed: the authors' per-example k-means runs as"
            " a NumPy loop (common._kmeans_numpy), cheaper than sklearn's KMeans: the"
            " speedups below are understated"
        )
    print(
        f"# data: {data_description}; K = {args.k}; DynamicPO {hyperparameters()} both ways;"
        f" AdamW lr {args.lr}. Reference: authors = a second frozen copy, recpo ="
        f" {'the adapter disabled' if args.lora else 'a frozen copy'}."
    )
    memory = (
        "torch.cuda.max_memory_allocated above the step's start"
        if args.device == "cuda"
        else "torch profiler CPU allocator events above the step's start (tensors only, not RSS)"
    )
    print(
        f"# timing: the ways interleaved (order flipped every repeat); median of"
        f" {args.repeats} updates after {args.warmup} warm-up at --batch-sizes,"
        f" {args.large_repeats} at the largest batch (the search's updates warm it up) and"
        f" per accumulation setting (after 1 warm-up); peak memory: {memory}, one extra"
        f" update{' (skipped: --no-memory)' if args.no_memory else ''}; footprint = weights the way holds (policy, its reference copy, AdamW"
        " moments) + peak. FLOPs: 6·N per trained position, 2·N per reference position,"
        " N split into body (every position run) and head (authors: every position;"
        " recpo: answer tokens); recomputation under checkpointing only in HFU."
    )
    sys.stdout.flush()

    results: dict[str, Any] = {"check": check_agreement(ctx, compiled)}
    step_runs: list[Run] = []
    if "step" in args.parts:
        step_runs = part_step(ctx)
        results["step"] = [r.summary() for r in step_runs]
    if "largest" in args.parts:
        runs, searches = part_largest(ctx)
        results["largest"] = {"search": searches, "runs": [r.summary() for r in runs]}
    if "accumulate" in args.parts:
        results["accumulate"] = [r.summary() for r in part_accumulate(ctx)]
    if "objective" in args.parts:
        results["objective"] = part_objective(ctx, compiled, step_runs)
    print(f"\n# {load_average()} at the end")

    if args.json_out is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        payload = {
            "args": settings,
            "device": machine_description(args.device),
            "data": data_description,
            "results": results,
        }
        args.json_out.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
