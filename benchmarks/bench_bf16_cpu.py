"""float32 against bf16 autocast (``trainer.precision=bf16-mixed``) on a CPU, with
SmolLM2-135M-Instruct on real LastFM rows.

Speed, measured side by side in one process: each repetition runs the same work
once in float32 and once under ``torch.autocast("cpu", torch.bfloat16)`` (the order
alternates between repetitions), so a change of machine load during the run hits
both; the ratio of the medians is the figure to compare between machines.

* ``sft``: one SFT training step (``SFTModule.training_step`` under autocast, as
  Lightning's bf16-mixed plugin runs it, backward and AdamW outside), batch
  ``--batch-size``;
* ``dmpo``: one DMPO step (policy + frozen reference copy), K = ``--negatives``;
* ``ranking`` / ``generation``: ``evaluate_split`` with one protocol on the first
  ``--eval-rows`` test rows (shared scoring; greedy decoding, at most 20 tokens).

Agreement (``--agree-rows``, default 200 test rows): the summed answer log-probs of
all 20 candidates under shared scoring in both precisions (absolute differences,
overall and per answer token), whether the top-ranked candidate is the same, and
rank HR@1 under each; for the first ``--agree-gen-rows`` rows, whether greedy
generation gives the same answer.

The CPU's bfloat16 support is printed first: Intel AMX (``amx_bf16``) or
AVX-512 BF16 (``avx512_bf16``) run bfloat16 products in hardware; without either,
torch emulates them and bf16 is usually slower than float32.

    python benchmarks/bench_bf16_cpu.py --threads 1 --json-out bf16.json
    python benchmarks/bench_bf16_cpu.py --parts sft ranking --agree-rows 0   # speed only
    python benchmarks/bench_bf16_cpu.py --model-dir SFT_FOLDER ...   # a fine-tuned SmolLM2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = ("sft", "dmpo", "ranking", "generation")


# Where the composed config's run folder points (nothing is written there).
OUTPUT_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-bf16-cpu"


def precision_context(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step(module, optimizer, batch, bf16: bool) -> float:
    start = time.perf_counter()
    with precision_context(bf16):
        loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def side_by_side(run, repeats: int) -> dict[str, list[float]]:
    """``run(bf16) -> seconds`` ``repeats`` times in each precision, alternating
    which goes first; one untimed warm-up in each precision before."""
    run(False)
    run(True)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(repeats):
        for bf16 in (False, True) if i % 2 == 0 else (True, False):
            times["bf16" if bf16 else "fp32"].append(run(bf16))
    return times


def report(name: str, times: dict[str, list[float]], unit: str, per: int) -> dict:
    fp32 = statistics.median(times["fp32"]) / per
    bf16 = statistics.median(times["bf16"]) / per
    row = {
        "what": name,
        "unit": unit,
        "fp32": round(fp32, 3),
        "bf16": round(bf16, 3),
        "fp32_over_bf16": round(fp32 / bf16, 2),
        "repeats": len(times["fp32"]),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(
        f"| {name} | {fp32:.3f} {unit} | {bf16:.3f} {unit} | {fp32 / bf16:.2f}x |"
        f" {row['repeats']} | {row['load_1min']:.2f} |",
        flush=True,
    )
    return row


def first_rows(loader, n: int) -> list[dict]:
    """The loader's first batches, until they hold at least ``n`` rows."""
    batches, count = [], 0
    for batch in loader:
        if count >= n:
            break
        batches.append(batch)
        count += len(batch["rows"])
    return batches


def agreement(model, tokenizer, loader, gen_rows: int) -> dict:
    """Log-prob differences and top-1 agreement of ranking, fp32 against bf16."""
    from recpo.evaluation.evaluate import generate_batch
    from recpo.models.scoring import score_answers

    diffs, per_token, same_top, hits = [], [], 0, {"fp32": 0, "bf16": 0}
    same_answer = generated = rows = 0
    start = time.perf_counter()
    model.eval()
    for batch in loader:
        inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["answer_ids"])
        inputs += (batch["answer_mask"],)
        scores = {}
        with torch.no_grad():
            for tag, bf16 in (("fp32", False), ("bf16", True)):
                with precision_context(bf16):
                    scores[tag] = score_answers(model, *inputs, method="shared")
        real = batch["answer_mask"].sum(-1) > 0
        diff = (scores["fp32"].logps - scores["bf16"].logps).abs()
        diffs.append(diff[real])
        per_token.append((diff / scores["fp32"].num_tokens.clamp(min=1))[real])
        top = {tag: s.logps.masked_fill(~real, -torch.inf).argmax(1) for tag, s in scores.items()}
        same_top += int((top["fp32"] == top["bf16"]).sum())
        for tag in hits:
            hits[tag] += int((top[tag] == batch["target_index"]).sum())
        rows += len(real)
        if generated < gen_rows:
            answers = {}
            for tag, bf16 in (("fp32", False), ("bf16", True)):
                with precision_context(bf16):
                    _, records = generate_batch(model, tokenizer, batch)
                answers[tag] = [r["answer"] for r in records]
            take = min(gen_rows - generated, len(answers["fp32"]))
            same_answer += sum(
                a == b for a, b in zip(answers["fp32"][:take], answers["bf16"][:take])
            )
            generated += take
        print(f"  agreement: {rows} rows, {time.perf_counter() - start:.0f} s", flush=True)
    diff, token = torch.cat(diffs), torch.cat(per_token)
    result = {
        "rows": rows,
        "answers_scored": int(diff.numel()),
        "logp_abs_diff_mean": round(float(diff.mean()), 4),
        "logp_abs_diff_median": round(float(diff.median()), 4),
        "logp_abs_diff_p99": round(float(diff.quantile(0.99)), 4),
        "logp_abs_diff_max": round(float(diff.max()), 4),
        "per_token_abs_diff_mean": round(float(token.mean()), 4),
        "per_token_abs_diff_max": round(float(token.max()), 4),
        "top1_agreement": round(same_top / rows, 4),
        "rank_hr@1_fp32": round(hits["fp32"] / rows, 4),
        "rank_hr@1_bf16": round(hits["bf16"] / rows, 4),
        "generation_rows": generated,
        "generation_same_answer": round(same_answer / max(generated, 1), 4),
    }
    for key, value in result.items():
        print(f"  {key}: {value}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per precision")
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    parser.add_argument("--agree-rows", type=int, default=200)
    parser.add_argument("--agree-gen-rows", type=int, default=32)
    parser.add_argument("--model-dir", default=None, help="a fine-tuned SmolLM2 folder")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import hydra

    from recpo.config import compose
    from recpo.evaluation.evaluate import evaluate_split
    from recpo.models.precision import cpu_bf16_features
    from recpo.pipeline import build_datamodule, load_base
    from recpo.training.preference import PreferenceModule
    from recpo.training.sft import SFTModule

    features = cpu_bf16_features()
    capability = torch.backends.cpu.get_cpu_capability()
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"CPU: {cpu}; {os.cpu_count()} logical CPUs; torch CPU capability {capability}")
    print("bf16 flags: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in features.items()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    cfg = compose(
        [
            "+experiment=lastfm_dmpo",
            "backbone=smollm2_135m",
            f"paths.data_dir={args.data_dir}",
            f"sft.batch_size={args.batch_size}",
            f"po.batch_size={args.batch_size}",
            f"po.num_negatives={args.negatives}",
            f"eval.max_examples={max(args.eval_rows, args.agree_rows)}",
            f"runtime.eval_batch_size={args.eval_batch_size}",
            *args.overrides,
        ],
        output_dir=OUTPUT_DIR,
    )
    dm = build_datamodule(cfg, "sft")
    if args.model_dir:
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.backbone.kind, cfg.backbone.source = "smollm2", "model_dir"
            cfg.paths.model_dir = args.model_dir
    base = load_base(cfg, dm)
    model = base.model
    rows: list[dict] = []
    agreed = None
    if args.agree_rows:
        # Before any training step: the weights as loaded (see the README of
        # experiments/smollm2_study for what an optimizer step does to this figure).
        print(f"\nagreement on the first {args.agree_rows} test rows", flush=True)
        loader = first_rows(dm.eval_dataloader("test"), args.agree_rows)
        agreed = agreement(model, base.tokenizer, loader, args.agree_gen_rows)
    print("\n| what | fp32 | bf16 autocast | fp32 / bf16 | repeats | load (1 min) |")
    print("|---|---|---|---|---|---|", flush=True)
    steps = args.repeats + 1
    if "sft" in args.parts:
        batches = [b for _, b in zip(range(steps), dm.train_dataloader())]
        module = SFTModule(model, optimizer=lambda p: torch.optim.AdamW(p))
        module.log = module.log_dict = lambda *a, **k: None
        module.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7)
        counter = iter(range(10**6))
        times = side_by_side(
            lambda bf16: train_step(module, optimizer, batches[next(counter) % steps], bf16),
            args.repeats,
        )
        rows.append(report(f"SFT step, batch {args.batch_size}", times, "s/step", 1))
        del module, optimizer
    if "dmpo" in args.parts:
        po_dm = dm.for_training(
            train_mode="preference", batch_size=args.batch_size, num_negatives=args.negatives
        )
        batches = [b for _, b in zip(range(steps), po_dm.train_dataloader())]
        policy = copy.deepcopy(model)
        module = PreferenceModule(
            policy,
            objective=hydra.utils.instantiate(cfg.objective),
            optimizer=lambda p: torch.optim.AdamW(p),
            reference="copy",
        )
        module.log = module.log_dict = lambda *a, **k: None
        module.train()
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-7)
        counter = iter(range(10**6))
        times = side_by_side(
            lambda bf16: train_step(module, optimizer, batches[next(counter) % steps], bf16),
            args.repeats,
        )
        label = f"DMPO step, batch {args.batch_size}, K = {args.negatives}"
        rows.append(report(label, times, "s/step", 1))
        del module, optimizer, policy
    model.eval()
    eval_batches = first_rows(dm.eval_dataloader("test"), args.eval_rows)
    n = sum(len(b["rows"]) for b in eval_batches)
    for protocol in ("ranking", "generation"):
        if protocol not in args.parts:
            continue

        def run(bf16: bool, protocol: str = protocol) -> float:
            start = time.perf_counter()
            with precision_context(bf16):
                evaluate_split(model, base.tokenizer, eval_batches, "test", protocols=(protocol,))
            return time.perf_counter() - start

        label = f"{protocol}, {n} rows, batch {args.eval_batch_size}"
        rows.append(report(label, side_by_side(run, args.repeats), "s/row", n))
    result = {
        "cpu": cpu,
        "cpu_capability": capability,
        "bf16_flags": features,
        "threads": args.threads,
        "torch": torch.__version__,
        "model": args.model_dir or "pretrained SmolLM2-135M-Instruct (GGUF, float32)",
        "speed": rows,
    }
    if agreed is not None:
        result["agreement"] = agreed
    load = os.getloadavg()
    result["loadavg_at_end"] = [round(x, 2) for x in load]
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
