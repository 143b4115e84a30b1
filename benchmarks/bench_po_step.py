"""Training-step time of DMPO vs DynamicPO, side by side on the same model and batches.

One step is what a preference-optimization step costs in training:
:meth:`PreferenceModule.training_step` (policy scoring, frozen-reference scoring
under ``no_grad``, the objective and its diagnostics), the backward pass, and an
AdamW step. The two objectives are the Hydra targets of ``conf/objective/dmpo.yaml``
and ``conf/objective/dynamicpo.yaml`` with their defaults; only the objective
differs between the two, so the gap between their step times is DynamicPO's
overhead (boundary-negative selection, dual-margin β, extra diagnostics).

Timing: the two objectives alternate step by step on the same batch (the order
flips every repeat), so drift of a shared machine hits both alike. Each is
reported as the best and the median over the repeats; the overhead is given
from the best times, from the medians, as the median of the per-repeat paired
differences, and from the objective-only times (``objective(logps)`` and its
backward down to the log-probs, each right after a real forward of the batch):
the last one is the least noisy, since it times only what differs (the few
extra scalars DynamicPO logs are left out: ~0.05 ms on the CPU). On a busy
machine the whole-step differences can be several % either way, while the
objective-only one is stable. Everything runs on one CPU thread by default
(``--threads``).

Data: real LastFM training batches (the datamodule's ``preference`` mode, K
negatives, shuffled with the seed) when ``<data dir>/lastfm`` exists, else the
embedded synthetic dataset.

Models:

* ``--shape tiny`` (default): the project's tiny backbone (Llama, 2 layers,
  hidden 128) built by :func:`recpo.models.backbone.load_backbone` from
  ``conf/backbone/tiny.yaml``, title tokenizer, full fine-tuning, reference =
  a frozen copy;
* ``--shape llama2-7b``: random weights of Llama-2-7b's shape, built on the
  device, byte-level BPE tokenizer of the dataset; with ``--lora`` (r=8, alpha=32,
  all projections) the reference is the same model with its adapter disabled.

Examples::

    python benchmarks/bench_po_step.py                     # tiny, CPU, ~1-2 min
    python benchmarks/bench_po_step.py --device cuda --dtype bfloat16 \\
        --shape llama2-7b --lora --repeats 6
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from common import (
    ATTENTION,
    BATCH_KEYS,
    SHAPES,
    add_data_arguments,
    add_lora,
    build_model,
    dataset_tokenizers,
    default_cache_dir,
    load_average,
    load_backbone_model,
    load_datamodule,
    machine_description,
    timed,
)
from torch import Tensor

from recpo.objectives.losses import dmpo
from recpo.objectives.plugin import dynamicpo
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps

OBJECTIVES: dict[str, Callable[[PreferenceLogps], ObjectiveOutput]] = {
    "DMPO": dmpo,
    "DynamicPO": dynamicpo,
}


@dataclass
class Timings:
    """Seconds per step of each objective, one entry per repeat, in repeat order."""

    step: dict[str, list[float]] = field(default_factory=dict)
    objective: dict[str, list[float]] = field(default_factory=dict)
    peak_gib: dict[str, float] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--attn", default="sdpa", choices=sorted(ATTENTION))
    parser.add_argument("--lora", action="store_true", help="LoRA r=8, alpha=32, all projections")
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="default: on for llama2-7b (batch 32 would not fit without), off for tiny",
    )
    parser.add_argument(
        "--tokenizer", choices=["title", "bpe"], help="default: title (tiny), bpe (llama2-7b)"
    )
    parser.add_argument("--scoring", default="shared", choices=["shared", "concat"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--k", type=int, default=15, help="negatives per example")
    parser.add_argument("--repeats", type=int, default=40, help="timed steps per objective")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per objective")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument(
        "--objective-repeats",
        type=int,
        default=30,
        help="timed objective calls per objective (each after an untimed forward)",
    )
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: 1 on CPU, torch's choice on CUDA)"
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="tiny backbones and synthetic data (default: $RECPO_CACHE_DIR, else .cache)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.shape != "tiny"
    if args.tokenizer is None:
        args.tokenizer = "title" if args.shape == "tiny" else "bpe"
    if args.attn == "flex" and args.device != "cuda":
        parser.error("--attn flex needs --device cuda (FlexAttention has no CPU backward)")
    if args.repeats < 1 or args.objective_repeats < 1:
        parser.error("--repeats and --objective-repeats must be at least 1")
    return args


def load_policy(args: argparse.Namespace, datamodule: Any) -> tuple[Any, Any]:
    """The policy model (on the device) and its tokenizer."""
    if args.shape != "tiny":
        tokenizer = dataset_tokenizers(datamodule, [args.tokenizer])[args.tokenizer]
        vocab_size = SHAPES[args.shape]["vocab_size"]
        if len(tokenizer) > vocab_size:
            sys.exit(f"the {args.tokenizer} tokenizer has more tokens than {vocab_size}")
        return build_model(args, vocab_size), tokenizer
    model, tokenizer, _ = load_backbone_model(
        "tiny",
        datamodule,
        cache_dir=args.cache_dir,
        dtype=args.dtype,
        attn=args.attn,
        gradient_checkpointing=args.gradient_checkpointing,
        tokenizer=args.tokenizer,
    )
    if args.lora:
        model = add_lora(model)
    return model.to(args.device), tokenizer


def training_batches(
    datamodule: Any, tokenizer: Any, batch_size: int, count: int, device: str
) -> list[dict[str, Tensor]]:
    """The first ``count`` batches of the training loader in ``preference`` mode."""
    datamodule.set_tokenizer(tokenizer)
    datamodule.batch_size = batch_size
    datamodule.train_mode = "preference"
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append({key: batch[key].to(device) for key in BATCH_KEYS})
        if len(batches) == count:
            break
    return batches


def train_step(module: Any, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor]) -> None:
    """Policy + reference scoring, objective, backward and optimiser step."""
    loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_steps(
    module: Any,
    optimizer: torch.optim.Optimizer,
    batches: list[dict[str, Tensor]],
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """Per-repeat step seconds of each objective, the objectives interleaved.

    Both objectives see the same batch in a repeat, and which goes first
    alternates, so a slow spell of the machine, or the cost of going second,
    falls on both equally.
    """
    names = list(OBJECTIVES)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.warmup + args.repeats):
        batch = batches[repeat % len(batches)]
        for name in names if repeat % 2 == 0 else names[::-1]:
            module.objective = OBJECTIVES[name]
            step = functools.partial(train_step, module, optimizer, batch)
            seconds = timed(step, args.device)
            if repeat >= args.warmup:
                times[name].append(seconds)
    return times


def time_objectives(
    module: Any, batches: list[dict[str, Tensor]], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Seconds of each objective inside a step: ``objective(logps)`` and its backward.

    Every call follows a fresh forward of the policy and the reference (untimed),
    as in training: timed on warm inputs alone, the objective runs 2-3x faster
    than right after the model's forward (on the CPU at least), which would
    understate it. The backward stops at the policy log-probs
    (``torch.autograd.grad``), so only the objective's part of it is timed.
    """

    def call(objective: Callable[[PreferenceLogps], ObjectiveOutput], logps: PreferenceLogps):
        loss = objective(logps).losses.mean()
        torch.autograd.grad(loss, [logps.policy_chosen, logps.policy_rejected])

    names = list(OBJECTIVES)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.warmup + args.objective_repeats):
        batch = batches[repeat % len(batches)]
        for name in names if repeat % 2 == 0 else names[::-1]:
            logps = module.preference_logps(batch)
            seconds = timed(functools.partial(call, OBJECTIVES[name], logps), args.device)
            if repeat >= args.warmup:
                times[name].append(seconds)
            del logps  # frees the model's graph before the next forward
    return times


def peak_memory_gib(
    module: Any, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor]
) -> dict[str, float]:
    """Peak CUDA memory (weights included) of one step of each objective."""
    peaks = {}
    for name, objective in OBJECTIVES.items():
        module.objective = objective
        torch.cuda.reset_peak_memory_stats()
        train_step(module, optimizer, batch)
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated() / 2**30
    return peaks


def run_batch_size(
    module: Any,
    optimizer: torch.optim.Optimizer,
    batches: list[dict[str, Tensor]],
    args: argparse.Namespace,
) -> Timings | None:
    """All measurements for one batch size; None when it does not fit in memory."""
    try:
        timings = Timings(step=time_steps(module, optimizer, batches, args))
        timings.objective = time_objectives(module, batches, args)
        if args.device == "cuda":
            timings.peak_gib = peak_memory_gib(module, optimizer, batches[0])
        return timings
    except torch.OutOfMemoryError:
        pass
    # Freed only here, once the exception and the frames holding the step's
    # tensors are gone, so that the next batch size starts clean.
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    return None


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f}"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:+.2f}%"


def overheads(timings: Timings) -> dict[str, tuple[float, float]]:
    """DynamicPO minus DMPO, in seconds and relative to DMPO's step, four ways."""
    dmpo_steps, dyn_steps = timings.step["DMPO"], timings.step["DynamicPO"]
    dmpo_best, dmpo_median = min(dmpo_steps), statistics.median(dmpo_steps)
    paired = statistics.median(d - m for d, m in zip(dyn_steps, dmpo_steps))
    objective_gap = statistics.median(timings.objective["DynamicPO"]) - statistics.median(
        timings.objective["DMPO"]
    )
    return {
        "best": (min(dyn_steps) - dmpo_best, dmpo_best),
        "median": (statistics.median(dyn_steps) - dmpo_median, dmpo_median),
        "paired median": (paired, dmpo_median),
        "objective-only": (objective_gap, dmpo_median),
    }


def print_batch_table(batch_size: int, lengths: str, timings: Timings, device: str) -> None:
    print(f"\n### batch {batch_size}: {lengths}")
    memory = " | peak GiB" if device == "cuda" else ""
    print(
        "\n| objective | step ms best | step ms median | objective ms best"
        f" | objective ms median | objective share of step (medians){memory} |"
    )
    print("|" + "---|" * (7 if device == "cuda" else 6))
    for name in OBJECTIVES:
        steps, objective = timings.step[name], timings.objective[name]
        share = statistics.median(objective) / statistics.median(steps)
        peak = f" | {timings.peak_gib[name]:.2f}" if device == "cuda" else ""
        print(
            f"| {name} | {ms(min(steps))} | {ms(statistics.median(steps))}"
            f" | {ms(min(objective))} | {ms(statistics.median(objective))}"
            f" | {100 * share:.2f}%{peak} |"
        )
    print("\nDynamicPO overhead over DMPO (target < 1%):")
    for how, (gap, base) in overheads(timings).items():
        print(f"  {how:>14}: {1000 * gap:+.3f} ms per step ({percent(gap, base)})")
    sys.stdout.flush()


def print_summary(results: dict[int, Timings | None]) -> None:
    print("\n### summary: DynamicPO step-time overhead over DMPO")
    print(
        "\n| batch | DMPO step ms (median) | DynamicPO step ms (median) | overhead (best)"
        " | overhead (median) | overhead (paired median) | overhead (objective-only) |"
    )
    print("|" + "---|" * 7)
    for batch_size, timings in results.items():
        if timings is None:
            print(f"| {batch_size} | OOM | OOM | - | - | - | - |")
            continue
        gaps = overheads(timings)
        cells = " | ".join(percent(*gaps[how]) for how in gaps)
        print(
            f"| {batch_size} | {ms(statistics.median(timings.step['DMPO']))}"
            f" | {ms(statistics.median(timings.step['DynamicPO']))} | {cells} |"
        )


def batch_lengths(batches: list[dict[str, Tensor]]) -> str:
    """Mean real and padded prompt / answer lengths of the timed batches."""
    prompt = torch.cat([b["prompt_mask"].sum(-1) for b in batches]).float().mean().item()
    answer = torch.cat([b["answer_mask"].sum(-1).flatten() for b in batches]).float()
    padded_p = statistics.fmean(b["prompt_ids"].shape[1] for b in batches)
    padded_a = statistics.fmean(b["answer_ids"].shape[2] for b in batches)
    return (
        f"{len(batches)} batches, K={batches[0]['answer_ids'].shape[1] - 1}, prompt mean"
        f" {prompt:.1f} tokens (padded {padded_p:.0f}), answer mean {answer.mean().item():.1f}"
        f" tokens (padded {padded_a:.0f})"
    )


def main() -> None:
    args = parse_args()
    if args.threads is None and args.device == "cpu":
        args.threads = 1  # stable timings on a shared machine (see bench_scoring.py)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cache_dir is None:
        args.cache_dir = default_cache_dir()
    # training_step logs through self.log, which only warns without a Trainer.
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing_enable.*deprecated")

    from recpo.training.preference import PreferenceModule

    datamodule, data_description = load_datamodule(
        args.data_dir, args.synthetic, args.cache_dir, args.k, args.seed
    )
    model, tokenizer = load_policy(args, datamodule)
    reference = "disable_adapter" if args.lora else "copy"
    module = PreferenceModule(
        model,
        objective=dmpo,
        optimizer=functools.partial(torch.optim.AdamW, lr=args.lr),
        scoring=args.scoring,
        reference=reference,
    ).to(args.device)
    module.train()
    optimizer = module.configure_optimizers()
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)

    print(
        f"# PO step benchmark: shape={args.shape} lora={args.lora} dtype={args.dtype}"
        f" attn={args.attn} grad_ckpt={args.gradient_checkpointing} tokenizer={args.tokenizer}"
        f" (vocab {len(tokenizer)}) scoring={args.scoring} reference={reference}"
    )
    print(f"# device: {machine_description(args.device)}; {load_average()} at the start")
    print(
        f"# data: {data_description}. trainable parameters: {trainable:,}. AdamW lr={args.lr}."
        f" step = training_step + backward + optimizer step; {args.repeats} timed repeats"
        f" after {args.warmup} warm-up, DMPO and DynamicPO interleaved (order flipped every"
        f" repeat); objective-only: {args.objective_repeats} calls each (objective forward +"
        " backward to the log-probs, each after an untimed model forward)."
    )

    results: dict[int, Timings | None] = {}
    for batch_size in args.batch_sizes:
        batches = training_batches(datamodule, tokenizer, batch_size, args.batches, args.device)
        timings = run_batch_size(module, optimizer, batches, args)
        results[batch_size] = timings
        if timings is None:
            print(f"\n### batch {batch_size}: out of memory", flush=True)
            continue
        print_batch_table(batch_size, batch_lengths(batches), timings, args.device)
    print_summary(results)

    if args.json_out is not None:
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "data": data_description,
            "results": {
                str(b): None if t is None else t.__dict__ | {"overheads": overheads(t)}
                for b, t in results.items()
            },
        }
        args.json_out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
