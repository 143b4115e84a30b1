"""The Python half of ``scripts/gpu_check.sh``.

Two subcommands:

* ``env``: versions of the stack, the GPU, and which packages are missing
  (the device machine has no network, so nothing can be installed there);
* ``train``: a few training steps of :class:`~recpo.training.preference.PreferenceModule`
  under a Lightning ``Trainer``, on a Llama-2-7b-shaped model with random
  weights (nothing downloaded), bf16, LoRA r=8 / alpha=32 on all projections,
  gradient checkpointing, reference = the adapter disabled, batch 4 with K=15
  negatives and prompts of ~200 tokens. ``--strategy deepspeed`` runs it under
  ``DeepSpeedStrategy(stage=2)`` on one GPU; ``--strategy plain`` without DeepSpeed.
  Prints the step time (best and median after warm-up) and the peak memory.

``--shape tiny --device cpu`` runs the same code with a 2-layer model on the CPU,
which is how the script is tested without a GPU.

Usage::

    python scripts/gpu_check.py env
    python scripts/gpu_check.py train --objective dynamicpo --strategy deepspeed
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks' shared module, ``common``
sys.path.insert(0, str(REPO / "src"))  # recpo, when it is not installed

# What each part of the check imports; ``deepspeed`` is optional (plain fallback),
# ``sklearn`` too (bench_vs_authors then runs the authors' k-means in NumPy).
PACKAGES = [
    "torch",
    "transformers",
    "peft",
    "lightning",
    "deepspeed",
    "sklearn",
    "tokenizers",
    "omegaconf",
    "pandas",
    "numpy",
]
# The project modules each step imports (they pull in the packages above).
RECPO_MODULES = [
    "recpo.models.scoring",
    "recpo.data",
    "recpo.training.preference",
    "recpo.objectives.compiled",
]


def report_environment() -> None:
    """Print the versions of the stack and what is missing; never fails.

    Every module that does not import also gets an ``IMPORT_FAIL <module>: <error>``
    line, which ``gpu_check.sh`` reads to decide which steps can run.
    """
    print(f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}")
    missing = []
    for name in PACKAGES + RECPO_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # ImportError, or a broken install raising anything
            if name in PACKAGES:
                missing.append(name)
            print(f"{name:>25}: MISSING")
            print(f"IMPORT_FAIL {name}: {type(err).__name__}: {err}")
            continue
        print(f"{name:>25}: {getattr(module, '__version__', 'ok')}")
    try:
        import torch
    except ImportError:
        print("MISSING: torch -- nothing can run")
        return
    print(f"torch CUDA build: {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(
            f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability"
            f" {props.major}.{props.minor}, {torch.cuda.device_count()} visible,"
            f" bf16 supported: {torch.cuda.is_bf16_supported()}"
        )
    else:
        print("GPU: none visible to torch (torch.cuda.is_available() is False)")
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401

        print("FlexAttention: importable")
    except ImportError as err:
        print(f"FlexAttention: not available ({err})")
    print("MISSING: " + (" ".join(missing) if missing else "nothing"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="versions, GPU and missing packages")
    train = sub.add_parser("train", help="a few PreferenceModule steps under Lightning")
    train.add_argument("--objective", choices=["dmpo", "dynamicpo"], required=True)
    train.add_argument("--strategy", choices=["deepspeed", "plain"], default="deepspeed")
    train.add_argument("--shape", choices=["llama2-7b", "tiny"], default="llama2-7b")
    train.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    train.add_argument("--steps", type=int, default=5, help="timed steps")
    train.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--k", type=int, default=15, help="negatives per example")
    train.add_argument("--prompt-len", type=int, default=200, help="mean prompt tokens")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "train" and args.strategy == "deepspeed" and args.device != "cuda":
        parser.error("--strategy deepspeed needs --device cuda")
    return args


def make_batches(args: argparse.Namespace, vocab_size: int, count: int) -> list[dict[str, Any]]:
    """Random-id batches: prompts of prompt_len ± 10%, answers of 6-10 tokens (BPE-like)."""
    from common import make_synthetic_batch

    spread = max(1, args.prompt_len // 10)
    spec = {
        "prompt_range": (args.prompt_len - spread, args.prompt_len + spread),
        "answer_range": (6, 10),
    }
    keys = ("prompt_ids", "prompt_mask", "answer_ids", "answer_mask")
    batches = []
    for i in range(count):
        tensors = make_synthetic_batch(
            spec, args.batch_size, args.k + 1, vocab_size, args.seed + i, "cpu"
        )
        batches.append(dict(zip(keys, tensors)))
    return batches


def build_policy(args: argparse.Namespace) -> Any:
    """Random-weight Llama of ``args.shape`` with LoRA and gradient checkpointing."""
    from common import SHAPES, build_model

    settings = argparse.Namespace(
        shape=args.shape,
        attn="sdpa",
        device=args.device,
        # bf16 weights on the GPU (DeepSpeed's bf16 mode would cast them anyway);
        # the CPU test keeps float32.
        dtype="bfloat16" if args.device == "cuda" else "float32",
        gradient_checkpointing=True,
        lora=True,
        seed=args.seed,
    )
    return build_model(settings, SHAPES[args.shape].get("vocab_size", 8000))


def step_timer_callback(device: str) -> Any:
    """A Lightning callback that times each training batch (device queue drained)."""
    import lightning as L
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []
            self.start_gib = 0.0
            self._t0 = 0.0

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.start_gib = torch.cuda.memory_allocated() / 2**30

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
            sync()
            self._t0 = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
        ) -> None:
            sync()
            self.times.append(time.perf_counter() - self._t0)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss))

    return StepTimer()


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Fit ``warmup + steps`` batches and return the timings and memory."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from recpo.objectives.losses import dmpo
    from recpo.objectives.plugin import dynamicpo
    from recpo.training.preference import PreferenceModule

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    torch.manual_seed(args.seed)
    model = build_policy(args)
    vocab_size = model.get_input_embeddings().weight.shape[0]
    total = args.warmup + args.steps
    objective = {"dmpo": dmpo, "dynamicpo": dynamicpo}[args.objective]
    module = PreferenceModule(
        model,
        objective=objective,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-5),
        reference="disable_adapter",
    )
    if args.strategy == "deepspeed":
        import logging

        from lightning.pytorch.strategies import DeepSpeedStrategy

        # The batch size is given: "auto" reads the loader's batch sampler,
        # which a loader of ready-made batches does not have.
        strategy: Any = DeepSpeedStrategy(
            stage=2, logging_level=logging.WARN, logging_batch_size_per_gpu=args.batch_size
        )
        strategy_name = "DeepSpeed ZeRO-2"
    else:
        strategy, strategy_name = "auto", "plain (no DeepSpeed)"
    precision = "bf16-mixed" if args.device == "cuda" else "32-true"
    timer = step_timer_callback(args.device)
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        strategy=strategy,
        precision=precision,
        max_steps=total,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = DataLoader(make_batches(args, vocab_size, total), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)

    timed = timer.times[args.warmup :]
    result = {
        "objective": args.objective,
        "strategy": strategy_name,
        "precision": precision,
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "k": args.k,
        "prompt_len": args.prompt_len,
        "steps_timed": len(timed),
        "step_ms_best": 1000 * min(timed) if timed else None,
        "step_ms_median": 1000 * statistics.median(timed) if timed else None,
        "first_step_ms": 1000 * timer.times[0] if timer.times else None,
        "losses": timer.losses,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if args.device == "cuda":
        result["memory_at_start_gib"] = timer.start_gib
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return result


def print_result(result: dict[str, Any]) -> None:
    def num(key: str, spec: str = ".1f") -> str:
        value = result.get(key)
        return "-" if value is None else format(value, spec)

    losses = ", ".join(f"{loss:.4f}" for loss in result["losses"])
    print(
        f"RESULT objective={result['objective']} strategy={result['strategy']}"
        f" precision={result['precision']} shape={result['shape']} device={result['device']}"
        f" batch={result['batch_size']} K={result['k']} prompt~{result['prompt_len']}"
        f" | step ms best {num('step_ms_best')} median {num('step_ms_median')}"
        f" (first step {num('first_step_ms')}) over {result['steps_timed']} steps"
        f" | peak allocated {num('peak_allocated_gib', '.2f')} GiB"
        f" (at start {num('memory_at_start_gib', '.2f')} GiB,"
        f" reserved {num('peak_reserved_gib', '.2f')} GiB)"
    )
    print(f"losses: {losses}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "env":
        report_environment()
        return
    if args.strategy == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            sys.exit("deepspeed is not importable: rerun with --strategy plain")
    result = run_training(args)
    print_result(result)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
