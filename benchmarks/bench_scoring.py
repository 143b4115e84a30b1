"""Step time and peak memory of concat vs shared-prompt answer scoring.

For K negatives (N = K + 1 answers per prompt) and batch B, each cell times

* the policy step: ``score_answers`` in train mode, then backward of a loss
  that depends on every answer;
* the reference step: ``score_answers`` under ``torch.no_grad()`` (with
  ``--lora``: the same model with its adapter disabled, i.e. the frozen base),

for ``method="concat"`` (one row per answer) and ``method="shared"`` (one packed
row per example), with two tokenizations:

* ``bpe``: byte-level BPE (vocabulary 8000) trained on the dataset's prompts and
  titles, as the tiny backbone's ``tokenizer: bpe`` builds it (on LastFM: prompts
  of 101-163 tokens, answers of 2-14); without the data, lengths of a general
  LLM tokenizer (prompts 150-250 tokens, answers 6-10);
* ``title``: the tiny backbone's default, one token per item title (on LastFM:
  prompts of 69-91 tokens, answers of 2 tokens: the title token and the end token).

Where the tokens come from, in order of preference:

1. ``--lengths-from lengths.json``: lengths resampled from the file, random ids.
   The file has the form::

       {"bpe":   {"prompt": [212, 187, ...], "answer": [7, 9, ...], "vocab_size": 8000},
        "title": {"prompt": [48, 52, ...],   "answer": [2, 2, ...]}}

   (each regime, and ``vocab_size``, optional); ``--export-lengths`` writes one
   from the real LastFM rows, for a machine without the data.
2. Real LastFM, when ``<data dir>/lastfm`` exists (``--data-dir``, else
   ``$RECPO_DATA_DIR``, else ``../shared/data`` beside the repo): ``--rows`` training rows
   drawn with the seed, rendered by the datamodule in ``preference`` mode (the
   target, then K negatives), tokenized by both tokenizers and collated by the
   training collator. The timed batch is the first ``--batch-size`` of those
   rows, with their real token ids and their first K negatives.
3. Otherwise (or with ``--synthetic-lengths``): lengths drawn with a fixed seed
   from the default ranges above, random ids. The cost does not depend on the ids.

Each table's heading says which lengths it used and their means.

Peak memory is the peak of tensor bytes allocated during the step above what
was live when it started (activations, logits, gradients; not the weights):
``torch.cuda.max_memory_allocated`` on CUDA and, on CPU, the running sum of the
CPU allocator's allocation and free events recorded by ``torch.profiler``
(``profile_memory=True``) in one extra, untimed step.

Examples::

    python benchmarks/bench_scoring.py                       # tiny Llama, CPU, ~2-4 min
    python benchmarks/bench_scoring.py --export-lengths lastfm_lengths.json
    python benchmarks/bench_scoring.py --device cuda --dtype bfloat16 \\
        --shape llama2-7b --lora --attn flex
"""

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from common import (
    ATTENTION,
    BATCH_KEYS,
    SHAPES,
    add_data_arguments,
    build_model,
    cpu_peak_mib,
    dataset_tokenizers,
    default_data_dir,
    lastfm_datamodule,
    load_average,
    machine_description,
    make_synthetic_batch,
    sample_rows,
    synchronize,
)
from torch import Tensor, nn

from recpo.models.scoring import score_answers

# Fallback length ranges (inclusive) and vocabularies of the two regimes, used
# without the data. bpe: what a general LLM tokenizer gives (the dataset's own
# 8000-token BPE is shorter on LastFM: prompts 101-163, mean 133; answers mean 3.7).
# title: LastFM's real range (prompts 69-91 tokens, mean 85; answers always 2).
REGIMES = {
    "bpe": {"prompt_range": (150, 250), "answer_range": (6, 10), "vocab_size": 8000},
    "title": {"prompt_range": (70, 90), "answer_range": (2, 2), "vocab_size": 9000},
}


@dataclass
class Measurement:
    """Best step time (ms) and peak memory (MiB) of one step kind; None after OOM."""

    ms: float | None
    peak_mib: float | None


@dataclass
class Regime:
    """Where one table's batches come from.

    Attributes:
        name: ``bpe`` or ``title``.
        vocab_size: the tokenizer's vocabulary (the tiny model's vocabulary).
        source: which lengths were used, for the table heading.
        make_batch: ``(num_answers, batch_size, device) -> (prompt_ids, prompt_mask,
            answer_ids, answer_mask)``, shapes ``(B, P)`` and ``(B, N, A)``.
        prompt_lens: real prompt lengths (LastFM only, for ``--export-lengths``).
        answer_lens: real answer lengths (LastFM only).
    """

    name: str
    vocab_size: int
    source: str
    make_batch: Callable[[int, int, str], tuple[Tensor, ...]]
    prompt_lens: list[int] | None = None
    answer_lens: list[int] | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--attn", default="sdpa", choices=sorted(ATTENTION))
    parser.add_argument("--lora", action="store_true", help="LoRA r=8, alpha=32, all projections")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 7, 15])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--regimes", nargs="+", default=["bpe", "title"], choices=sorted(REGIMES))
    parser.add_argument("--lengths-from", type=Path, help="JSON file of real token lengths")
    add_data_arguments(parser, synthetic=False)
    parser.add_argument("--rows", type=int, default=64, help="LastFM training rows tokenized")
    parser.add_argument(
        "--synthetic-lengths", action="store_true", help="ignore LastFM, draw lengths"
    )
    parser.add_argument(
        "--export-lengths",
        type=Path,
        help="write the LastFM token lengths here (the --lengths-from format) and exit",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per cell (best kept)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: 1 on CPU, torch's choice on CUDA)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args()
    if min(args.ks) < 1:
        parser.error("--ks must be at least 1 (one negative)")
    if args.attn == "flex" and args.device != "cuda":
        parser.error("--attn flex needs --device cuda (FlexAttention has no CPU backward)")
    if args.rows < args.batch_size:
        parser.error("--rows must be at least --batch-size")
    return args


def load_regimes(path: Path | None) -> dict[str, dict]:
    """Default regimes, with lengths (and vocab sizes) replaced by those in ``path``."""
    regimes = {name: dict(spec) for name, spec in REGIMES.items()}
    if path is not None:
        for name, spec in json.loads(path.read_text()).items():
            regimes.setdefault(name, {}).update(spec)
    return regimes


def synthetic_regime(name: str, spec: dict, seed: int, origin: str) -> Regime:
    """Lengths drawn from ``spec`` (observed lengths or ranges), random ids."""

    def mean_length(key: str) -> float:
        return statistics.fmean(spec[key] if key in spec else spec[f"{key}_range"])

    source = (
        f"{origin}: prompt mean {mean_length('prompt'):.1f} tokens, answer mean"
        f" {mean_length('answer'):.1f} tokens, random ids (seed {seed})"
    )

    def make(num_answers: int, batch_size: int, device: str) -> tuple[Tensor, ...]:
        return make_synthetic_batch(spec, batch_size, num_answers, spec["vocab_size"], seed, device)

    return Regime(name, spec["vocab_size"], source, make)


def lastfm_regimes(
    names: list[str], data_dir: Path, rows: int, num_negatives: int, seed: int
) -> dict[str, Regime]:
    """Regimes of real LastFM rows tokenized by the dataset's own tokenizers.

    Every row carries the target and ``num_negatives`` negatives; a batch for K
    negatives keeps the first K, so all K share the same rows.
    """
    from recpo.data import Collator

    datamodule = lastfm_datamodule(data_dir, num_negatives, seed)
    examples = sample_rows(datamodule, rows, seed)
    regimes = {}
    for name, tokenizer in dataset_tokenizers(datamodule, names).items():
        collator = Collator(tokenizer)
        prompt_lens = [len(ids) for ids in collator.prompt_ids([ex.prompt for ex in examples])]
        answer_lens = [len(collator.answer_ids(a)) for ex in examples for a in ex.answers]
        source = (
            f"real LastFM ({data_dir / 'lastfm'}), {len(examples)} training rows (seed {seed})"
            f" x {num_negatives + 1} answers: prompt mean {statistics.fmean(prompt_lens):.1f}"
            f" tokens ({min(prompt_lens)}-{max(prompt_lens)}), answer mean"
            f" {statistics.fmean(answer_lens):.1f} tokens ({min(answer_lens)}-{max(answer_lens)});"
            " timed batch = the first B rows, real token ids"
        )

        def make(
            num_answers: int, batch_size: int, device: str, collator: Any = collator
        ) -> tuple[Tensor, ...]:
            kept = [
                replace(ex, answers=ex.answers[:num_answers], positions=ex.positions[:num_answers])
                for ex in examples[:batch_size]
            ]
            batch = collator(kept)
            return tuple(batch[key].to(device) for key in BATCH_KEYS)

        regimes[name] = Regime(name, len(tokenizer), source, make, prompt_lens, answer_lens)
    return regimes


def prepare_regimes(args: argparse.Namespace) -> dict[str, Regime]:
    """The regimes to benchmark, from the best source available (see the module doc)."""
    if args.lengths_from is not None:
        specs = load_regimes(args.lengths_from)
        origin = f"lengths resampled from {args.lengths_from}"
        return {n: synthetic_regime(n, specs[n], args.seed, origin) for n in args.regimes}
    reason = "--synthetic-lengths given"
    if not args.synthetic_lengths:
        data_dir = args.data_dir or default_data_dir()
        if (data_dir / "lastfm").is_dir():
            try:
                return lastfm_regimes(args.regimes, data_dir, args.rows, max(args.ks), args.seed)
            except ImportError as err:  # the data pipeline's optional dependencies
                reason = f"cannot read LastFM ({err})"
        else:
            reason = f"no LastFM data at {data_dir / 'lastfm'} (set --data-dir or RECPO_DATA_DIR)"
    print(f"# {reason}: using synthetic lengths", flush=True)
    specs = load_regimes(None)
    origin = "synthetic lengths, uniform in the default ranges"
    return {n: synthetic_regime(n, specs[n], args.seed, origin) for n in args.regimes}


def export_lengths(regimes: dict[str, Regime], path: Path) -> None:
    """Write the real lengths of ``regimes`` in the ``--lengths-from`` format."""
    if any(r.prompt_lens is None for r in regimes.values()):
        sys.exit("--export-lengths needs the real LastFM data (see --data-dir)")
    payload = {
        name: {"prompt": r.prompt_lens, "answer": r.answer_lens, "vocab_size": r.vocab_size}
        for name, r in regimes.items()
    }
    path.write_text(json.dumps(payload))
    print(f"wrote the token lengths of {', '.join(regimes)} to {path}")


@contextlib.contextmanager
def reference_mode(model: nn.Module) -> Iterator[None]:
    """No autograd and, for a peft model, the adapter disabled (the frozen base).

    The model stays in train mode: these models have no dropout, so eval mode
    would compute the same, and flipping ``module.training`` makes transformers
    rebuild its compiled FlexAttention wrapper, which can recompile, at every switch.
    """
    disable = getattr(model, "disable_adapter", None)
    with torch.no_grad(), disable() if callable(disable) else contextlib.nullcontext():
        yield


def measure(step: Callable[[], None], args: argparse.Namespace) -> Measurement:
    """Best time of ``args.repeats`` calls of ``step`` after warm-up, and its peak memory.

    The minimum, not the mean: on a shared machine, slower repeats measure the
    other processes (as ``timeit`` advises).
    """
    times: list[float] = []
    peaks: list[float] = []
    try:
        for _ in range(args.warmup):
            step()
        for _ in range(args.repeats):
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                start_bytes = torch.cuda.memory_allocated()
            synchronize(args.device)
            start = time.perf_counter()
            step()
            synchronize(args.device)
            times.append(time.perf_counter() - start)
            if args.device == "cuda":
                peaks.append((torch.cuda.max_memory_allocated() - start_bytes) / 2**20)
        if args.device == "cpu":
            peaks.append(cpu_peak_mib(step))
    except torch.OutOfMemoryError:
        # Freed only here, once the exception (and the frames holding the
        # step's tensors) is gone.
        times.clear()
    if not times:
        gc.collect()
        torch.cuda.empty_cache()
        return Measurement(ms=None, peak_mib=None)
    return Measurement(ms=1000 * min(times), peak_mib=max(peaks))


def policy_step(model: nn.Module, batch: tuple[Tensor, ...], method: str) -> None:
    scores = score_answers(model, *batch, method=method)
    # A DPO loss against every negative: touches all N answers.
    margins = scores.logps[:, :1] - scores.logps[:, 1:]
    loss = torch.nn.functional.softplus(-margins).mean()
    loss.backward()
    # Gradients are counted in the step's peak, then dropped so that the next
    # step starts from the weights alone.
    model.zero_grad(set_to_none=True)


def reference_logps(model: nn.Module, batch: tuple[Tensor, ...], method: str) -> Tensor:
    with reference_mode(model):
        return score_answers(model, *batch, method=method).logps


def run_cell(
    model: nn.Module, batch: tuple[Tensor, ...], args: argparse.Namespace
) -> dict[str, object]:
    result: dict[str, object] = {}
    logps = {}
    model.train()
    for method in ["concat", "shared"]:
        result[f"{method}_policy"] = measure(lambda m=method: policy_step(model, batch, m), args)
        result[f"{method}_reference"] = measure(
            lambda m=method: reference_logps(model, batch, m), args
        )
        model.zero_grad(set_to_none=True)
        try:
            logps[method] = reference_logps(model, batch, method).float()
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    if len(logps) == 2:
        result["max_abs_diff"] = (logps["concat"] - logps["shared"]).abs().max().item()
    return result


def fmt(value: float | None, spec: str) -> str:
    return "OOM" if value is None else format(value, spec)


def ratio(slow: float | None, fast: float | None) -> str:
    return "-" if slow is None or fast is None else f"{slow / fast:.1f}x"


def mean_real_lengths(batch: tuple[Tensor, ...]) -> tuple[float, float]:
    """Mean real prompt and answer lengths of a batch."""
    _, prompt_mask, _, answer_mask = batch
    answer_lens = answer_mask.sum(-1)
    return prompt_mask.sum(-1).float().mean().item(), answer_lens.float().mean().item()


def print_header(regime: Regime) -> None:
    print(f"\n### {regime.name} tokenizer (vocab {regime.vocab_size})")
    print(f"lengths: {regime.source}")
    print(
        "\n| K | N | prompt len mean/padded | answer len mean/padded | policy ms concat"
        " | policy ms shared | speedup | ref ms concat | ref ms shared | speedup"
        " | policy MiB concat | policy MiB shared | ref MiB concat | ref MiB shared"
        " | max abs dlogp |"
    )
    print("|" + "---|" * 15, flush=True)


def print_row(row: dict[str, object]) -> None:
    """One table row, printed as soon as its cell finishes (a timeout keeps earlier rows)."""
    cp, sp = row["concat_policy"], row["shared_policy"]
    cr, sr = row["concat_reference"], row["shared_reference"]
    diff = row.get("max_abs_diff")
    print(
        f"| {row['k']} | {row['n']} | {row['prompt_mean']:.1f}/{row['prompt_len']}"
        f" | {row['answer_mean']:.1f}/{row['answer_len']}"
        f" | {fmt(cp.ms, '.1f')} | {fmt(sp.ms, '.1f')} | {ratio(cp.ms, sp.ms)}"
        f" | {fmt(cr.ms, '.1f')} | {fmt(sr.ms, '.1f')} | {ratio(cr.ms, sr.ms)}"
        f" | {fmt(cp.peak_mib, '.1f')} | {fmt(sp.peak_mib, '.1f')}"
        f" | {fmt(cr.peak_mib, '.1f')} | {fmt(sr.peak_mib, '.1f')}"
        f" | {'-' if diff is None else f'{diff:.1e}'} |",
        flush=True,
    )


def main() -> None:
    args = parse_args()
    if args.threads is None and args.device == "cpu":
        # On a shared machine, OpenMP threads that wait for a busy core make
        # multi-threaded CPU timings erratic (seconds-long outliers); one thread
        # gives stable numbers and the same ratio between the two methods.
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.attn == "flex":
        # Each new shape recompiles FlexAttention; past dynamo's recompile limit
        # it would silently fall back to the slow, memory-hungry eager version.
        for name in ("recompile_limit", "cache_size_limit"):  # new and old torch names
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 256)
    regimes = prepare_regimes(args)
    if args.export_lengths is not None:
        export_lengths(regimes, args.export_lengths)
        return

    memory_method = (
        "torch.cuda.max_memory_allocated"
        if args.device == "cuda"
        else "torch.profiler CPU allocator events, one extra untimed step"
    )
    print(
        f"# scoring benchmark: shape={args.shape} lora={args.lora} dtype={args.dtype}"
        f" attn={args.attn} grad_ckpt={args.gradient_checkpointing} batch={args.batch_size}"
    )
    print(f"# device: {machine_description(args.device)}; {load_average()} at the start")
    print(
        f"# time: best of {args.repeats} steps after {args.warmup} warm-up;"
        " policy = forward + backward, ref = forward under no_grad."
        f" peak memory above the step's start: {memory_method}."
        " Lengths: mean real tokens per prompt / per answer, and the padded width."
    )

    model, model_vocab = None, None
    all_rows = {}
    for regime in regimes.values():
        vocab_size = SHAPES[args.shape].get("vocab_size", regime.vocab_size)
        if vocab_size != model_vocab:
            model = None  # never two 7B models on the device at once
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
            model, model_vocab = build_model(args, vocab_size), vocab_size
        print_header(regime)
        rows = []
        for k in args.ks:
            batch = regime.make_batch(k + 1, args.batch_size, args.device)
            if int(batch[0].max()) >= vocab_size or int(batch[2].max()) >= vocab_size:
                sys.exit(f"{regime.name} token ids exceed the model's vocabulary {vocab_size}")
            prompt_mean, answer_mean = mean_real_lengths(batch)
            row: dict[str, object] = {
                "k": k,
                "n": k + 1,
                "prompt_len": batch[0].shape[1],
                "answer_len": batch[2].shape[2],
                "prompt_mean": prompt_mean,
                "answer_mean": answer_mean,
            }
            row.update(run_cell(model, batch, args))
            print_row(row)
            rows.append(row)
        all_rows[regime.name] = {"source": regime.source, "rows": rows}

    if args.json_out is not None:
        serialisable = {
            name: {
                "source": entry["source"],
                "rows": [
                    {k: (v.__dict__ if isinstance(v, Measurement) else v) for k, v in row.items()}
                    for row in entry["rows"]
                ],
            }
            for name, entry in all_rows.items()
        }
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json_out.write_text(json.dumps({"args": settings, "results": serialisable}, indent=2))


if __name__ == "__main__":
    main()
