"""Step time and peak memory of concat vs shared-prompt answer scoring.

For K negatives (N = K + 1 answers per prompt) and batch B, each cell times

* the policy step: ``score_answers`` in train mode, then backward of a loss
  that depends on every answer;
* the reference step: ``score_answers`` under ``torch.no_grad()`` (with
  ``--lora``: the same model with its adapter disabled, i.e. the frozen base),

for ``method="concat"`` (one row per answer) and ``method="shared"`` (one packed
row per example), with two token-length regimes:

* ``bpe``: the lengths an LLM tokenizer gives for LastFM prompts and titles
  (prompts ~150-250 tokens, answers ~6-10 tokens);
* ``title``: one token per item title (prompts ~35-60 tokens, answers of
  2 tokens: the title token and the end token).

Lengths are drawn with a fixed seed from those ranges, or from real lengths with
``--lengths-from lengths.json``, a file of the form::

    {"bpe":   {"prompt": [212, 187, ...], "answer": [7, 9, ...], "vocab_size": 32000},
     "title": {"prompt": [48, 52, ...],   "answer": [2, 2, ...]}}

(each regime, and ``vocab_size``, optional). Token ids are random: the cost
does not depend on them.

Peak memory is the peak of tensor bytes allocated during the step above what
was live when it started (activations, logits, gradients; not the weights):
``torch.cuda.max_memory_allocated`` on CUDA and, on CPU, the running sum of the
CPU allocator's allocation and free events recorded by ``torch.profiler``
(``profile_memory=True``) in one extra, untimed step.

Examples::

    python benchmarks/bench_scoring.py                       # tiny Llama, CPU, ~1-3 min
    python benchmarks/bench_scoring.py --device cuda --dtype bfloat16 \\
        --shape llama2-7b --lora --attn flex
"""

import argparse
import contextlib
import gc
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, LlamaConfig

from recpo.models.scoring import score_answers

# Default length ranges (inclusive) and vocabularies of the two regimes.
REGIMES = {
    "bpe": {"prompt_range": (150, 250), "answer_range": (6, 10), "vocab_size": 8000},
    "title": {"prompt_range": (35, 60), "answer_range": (2, 2), "vocab_size": 6000},
}

SHAPES = {
    # The tiny backbone of the project's CPU runs.
    "tiny": dict(
        num_hidden_layers=2,
        hidden_size=128,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=4,
    ),
    # Llama-2-7b: its vocabulary replaces the regime's.
    "llama2-7b": dict(
        num_hidden_layers=32,
        hidden_size=4096,
        intermediate_size=11008,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
}

ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flex": "flex_attention"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Measurement:
    """Best step time (ms) and peak memory (MiB) of one step kind; None after OOM."""

    ms: float | None
    peak_mib: float | None


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
    return args


def load_regimes(path: Path | None) -> dict[str, dict]:
    """Default regimes, with lengths (and vocab sizes) replaced by those in ``path``."""
    regimes = {name: dict(spec) for name, spec in REGIMES.items()}
    if path is not None:
        for name, spec in json.loads(path.read_text()).items():
            regimes.setdefault(name, {}).update(spec)
    return regimes


def draw_lengths(spec: dict, key: str, size: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Lengths resampled from observed ones (``spec[key]``), else uniform in ``spec[key_range]``."""
    if key in spec:
        observed = torch.tensor(spec[key])
        return observed[torch.randint(len(observed), size, generator=gen)]
    low, high = spec[f"{key}_range"]
    return torch.randint(low, high + 1, size, generator=gen)


def make_batch(
    spec: dict, batch: int, num_answers: int, vocab_size: int, seed: int, device: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Left-padded prompts and right-padded answers of drawn lengths, random ids.

    Returns:
        ``prompt_ids, prompt_mask`` ``(B, P)`` and ``answer_ids, answer_mask`` ``(B, N, A)``.
    """
    gen = torch.Generator().manual_seed(seed)
    prompt_lens = draw_lengths(spec, "prompt", (batch,), gen)
    answer_lens = draw_lengths(spec, "answer", (batch, num_answers), gen)
    prompt_len, answer_len = int(prompt_lens.max()), int(answer_lens.max())
    prompt_mask = torch.arange(prompt_len) >= prompt_len - prompt_lens[:, None]
    answer_mask = torch.arange(answer_len) < answer_lens[..., None]
    prompt_ids = torch.randint(1, vocab_size, (batch, prompt_len), generator=gen) * prompt_mask
    answer_ids = torch.randint(1, vocab_size, answer_mask.shape, generator=gen) * answer_mask
    tensors = (prompt_ids, prompt_mask.long(), answer_ids, answer_mask.long())
    return tuple(t.to(device) for t in tensors)


def build_model(args: argparse.Namespace, vocab_size: int) -> nn.Module:
    """Random-weight Llama of the requested shape, built directly on the device."""
    dims = dict(SHAPES[args.shape])
    dims.setdefault("vocab_size", vocab_size)
    config = LlamaConfig(
        **dims,
        max_position_embeddings=4096,
        attn_implementation=ATTENTION[args.attn],
        use_cache=False,
    )
    torch.manual_seed(args.seed)
    # Built on the device in the target dtype: a float32 7B copy would need 27 GB.
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    if args.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (LoRA).
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if args.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS)
        model = get_peft_model(model, lora)
    return model


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


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


def cpu_peak_mib(step: Callable[[], None]) -> float:
    """Peak CPU-allocator bytes held during ``step`` above those held at its start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for frees
        peak = max(peak, live)
    return peak / 2**20


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


def print_table(regime: str, rows: list[dict[str, object]]) -> None:
    print(f"\n### {regime} lengths")
    print(
        "| K | N | prompt len | answer len | policy ms concat | policy ms shared | speedup"
        " | ref ms concat | ref ms shared | speedup | policy MiB concat | policy MiB shared"
        " | ref MiB concat | ref MiB shared | max abs dlogp |"
    )
    print("|" + "---|" * 15)
    for row in rows:
        cp, sp = row["concat_policy"], row["shared_policy"]
        cr, sr = row["concat_reference"], row["shared_reference"]
        diff = row.get("max_abs_diff")
        print(
            f"| {row['k']} | {row['n']} | {row['prompt_len']} | {row['answer_len']}"
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
    regimes = load_regimes(args.lengths_from)

    memory_method = (
        "torch.cuda.max_memory_allocated"
        if args.device == "cuda"
        else "torch.profiler CPU allocator events, one extra untimed step"
    )
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    )
    print(
        f"# scoring benchmark: shape={args.shape} lora={args.lora} dtype={args.dtype}"
        f" attn={args.attn} grad_ckpt={args.gradient_checkpointing} device={args.device}"
        f" ({device_name}, {torch.get_num_threads()} threads) batch={args.batch_size}"
        f" torch={torch.__version__}"
    )
    print(
        f"# time: best of {args.repeats} steps after {args.warmup} warm-up;"
        " policy = forward + backward, ref = forward under no_grad."
        f" peak memory above the step's start: {memory_method}."
        f" lengths: {args.lengths_from or 'drawn from default ranges, seed ' + str(args.seed)}"
    )

    model, model_vocab = None, None
    all_rows = {}
    for regime in args.regimes:
        spec = regimes[regime]
        vocab_size = SHAPES[args.shape].get("vocab_size", spec["vocab_size"])
        if vocab_size != model_vocab:
            model = None  # never two 7B models on the device at once
            gc.collect()
            torch.cuda.empty_cache()
            model, model_vocab = build_model(args, vocab_size), vocab_size
        rows = []
        for k in args.ks:
            batch = make_batch(spec, args.batch_size, k + 1, vocab_size, args.seed, args.device)
            row: dict[str, object] = {
                "k": k,
                "n": k + 1,
                "prompt_len": batch[0].shape[1],
                "answer_len": batch[2].shape[2],
            }
            row.update(run_cell(model, batch, args))
            rows.append(row)
        print_table(f"{regime} (vocab {vocab_size})", rows)
        all_rows[regime] = rows

    if args.json_out is not None:
        serialisable = {
            regime: [
                {k: (v.__dict__ if isinstance(v, Measurement) else v) for k, v in row.items()}
                for row in rows
            ]
            for regime, rows in all_rows.items()
        }
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json_out.write_text(json.dumps({"args": settings, "results": serialisable}, indent=2))


if __name__ == "__main__":
    main()
