"""CPU cost of SmolLM2-135M on LastFM: load, SFT and PO steps, evaluation per row.

Everything goes through the project's own code on the composed config
(``+experiment=lastfm_dmpo backbone=smollm2_135m``): the data module's real LastFM
batches, ``load_backbone``, ``SFTModule`` / ``PreferenceModule`` training steps
(forward, backward, AdamW step), and ``evaluate_split`` for both protocols.

    python experiments/lastfm_smollm2/step_times.py --threads 2 --json-out times.json

A step is timed ``--steps`` times after one warm-up step, each on a new batch;
the median is reported, and rows/hour = batch / median step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def time_steps(module, batches, steps: int) -> list[float]:
    """Seconds per optimizer step (training_step + backward + AdamW), first one dropped."""
    module.log = module.log_dict = lambda *a, **k: None
    module.train()
    params = [p for p in module.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    times = []
    for batch in batches[: steps + 1]:
        start = time.perf_counter()
        loss = module.training_step(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times[1:]


def summary(name: str, times: list[float], batch_size: int) -> dict:
    median = statistics.median(times)
    row = {
        "what": name,
        "median_s": round(median, 3),
        "min_s": round(min(times), 3),
        "steps": len(times),
        "rows_per_hour": round(batch_size / median * 3600),
    }
    print(
        f"{name:<34} {row['median_s']:>7.2f} s/step (min {row['min_s']:.2f}, {len(times)} steps)"
        f"  {row['rows_per_hour']:>6} rows/h",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=15)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--parts", nargs="+", default=["sft", "dmpo", "dynamicpo", "eval"])
    parser.add_argument("--json-out", default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import hydra

    from recpo.config import compose
    from recpo.evaluation.evaluate import evaluate_split
    from recpo.pipeline import build_datamodule, load_base
    from recpo.training.preference import PreferenceModule
    from recpo.training.sft import SFTModule

    cfg = compose(
        [
            "+experiment=lastfm_dmpo",
            "backbone=smollm2_135m",
            f"paths.data_dir={args.data_dir}",
            f"sft.batch_size={args.batch_size}",
            f"po.batch_size={args.batch_size}",
            f"po.num_negatives={args.negatives}",
            f"eval.max_examples={args.eval_rows}",
            *args.overrides,
        ],
        output_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "smollm2-step-times",
    )
    rows: list[dict] = []
    start = time.perf_counter()
    dm = build_datamodule(cfg, "sft")
    dm.load()
    print(f"data: {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    base = load_base(cfg, dm)  # as a run loads it, the data module's tokenizer set
    load_s = time.perf_counter() - start
    print(f"load (resolve + from_pretrained, converts on first use): {load_s:.1f} s", flush=True)
    rows.append({"what": "load_backbone", "seconds": round(load_s, 1)})
    sft_batches = list(zip(range(args.steps + 1), dm.train_dataloader()))
    sft_batches = [b for _, b in sft_batches]
    lengths = [int(b["prompt_mask"].sum(-1).float().mean()) for b in sft_batches]
    print(f"prompt tokens per row (batch means): {lengths}", flush=True)
    po_dm = dm.for_training(
        train_mode="preference", batch_size=args.batch_size, num_negatives=args.negatives
    )
    po_batches = [b for _, b in zip(range(args.steps + 1), po_dm.train_dataloader())]
    answer_tokens = float(po_batches[0]["answer_mask"].sum(-1).float().mean())
    print(f"answer tokens per answer (first PO batch): {answer_tokens:.1f}", flush=True)
    objectives = {
        "dmpo": cfg.objective,
        "dynamicpo": {"_target_": "recpo.objectives.plugin.dynamicpo", "beta": 1.0},
    }
    base_model = base.model
    for mode in args.modes:
        if mode == "lora":
            from recpo.models.backbone import add_lora

            model = add_lora(base_model, cfg.backbone.lora)
        else:
            model = base_model
        if "sft" in args.parts:
            module = SFTModule(model, optimizer=lambda p: torch.optim.AdamW(p))
            rows.append(
                summary(f"SFT {mode}", time_steps(module, sft_batches, args.steps), args.batch_size)
            )
        for name in ("dmpo", "dynamicpo"):
            if name not in args.parts:
                continue
            module = PreferenceModule(
                model,
                objective=hydra.utils.instantiate(objectives[name]),
                optimizer=lambda p: torch.optim.AdamW(p),
                reference="disable_adapter" if mode == "lora" else "copy",
            )
            label = f"{name.upper()} {mode} K={args.negatives}"
            rows.append(summary(label, time_steps(module, po_batches, args.steps), args.batch_size))
            del module
        if mode == "lora":
            base_model = model.unload()
    if "eval" in args.parts:
        for protocol in ("ranking", "generation"):
            start = time.perf_counter()
            metrics = evaluate_split(
                base_model,
                base.tokenizer,
                dm.eval_dataloader("test"),
                "test",
                protocols=(protocol,),
                max_new_tokens=cfg.eval.max_new_tokens,
            )
            seconds = time.perf_counter() - start
            n = metrics["test/rows"]
            row = {
                "what": f"eval {protocol}",
                "rows": n,
                "s_per_row": round(seconds / n, 3),
                "rows_per_hour": round(n / seconds * 3600),
            }
            print(
                f"eval {protocol:<12} {seconds / n:.3f} s/row over {n} rows "
                f"({row['rows_per_hour']} rows/h; batch {cfg.runtime.eval_batch_size})",
                flush=True,
            )
            rows.append(row)
    load = os.getloadavg()
    info = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "negatives": args.negatives,
        "loadavg_at_end": [round(x, 2) for x in load],
        "torch": torch.__version__,
        "rows": rows,
    }
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
