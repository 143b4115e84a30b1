"""Evaluation time per row with both protocols: the prompt run once or twice.

``evaluate_split`` with ranking and generation runs each batch's prompts through the
model once: the shared-prompt ranking forward stores their keys and values and greedy
decoding continues from them (``prompt_cache_for``). Without that, each protocol runs
the prompt itself (as ``eval.protocols`` with one protocol does). Both ways run on the
same test rows, alternately, ``--repeats`` times each; the script prints seconds per
row for each, their ratio, and whether metrics and predictions agree.

Data: the LastFM test split when ``<data dir>/lastfm`` exists (``--data-dir``, else
``$RECPO_DATA_DIR``, else ``../shared/data``), otherwise the embedded synthetic dataset.
The backbone is a ``conf/backbone`` name (its real weights: the tiny backbone is built
with random weights, ``smollm2_135m`` is converted once into ``--cache-dir``).

Examples::

    python benchmarks/bench_eval.py                                  # tiny, 64 rows, ~1 min
    python benchmarks/bench_eval.py --backbone smollm2_135m --rows 32 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import (
    add_data_arguments,
    default_cache_dir,
    load_average,
    load_backbone_model,
    load_datamodule,
    machine_description,
)

import recpo.evaluation.evaluate as evaluate


def run(
    model, tokenizer, batches, share_prompt: bool, max_new_tokens: int
) -> tuple[float, dict, str]:
    """One ``evaluate_split`` over ``batches``: seconds, metrics, predictions file text."""
    real = evaluate.prompt_cache_for
    if not share_prompt:
        evaluate.prompt_cache_for = lambda *args: None
    try:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            metrics = evaluate.evaluate_split(
                model, tokenizer, batches, "test", max_new_tokens=max_new_tokens, out_dir=Path(out)
            )
            seconds = time.perf_counter() - start
            predictions = (Path(out) / "test_predictions.jsonl").read_text(encoding="utf-8")
    finally:
        evaluate.prompt_cache_for = real
    return seconds, metrics, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--json-out", type=Path, default=None)
    add_data_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_at_start = load_average()

    datamodule, data = load_datamodule(
        args.data_dir, args.synthetic, args.cache_dir, num_negatives=15, seed=0
    )
    model, tokenizer, cfg = load_backbone_model(args.backbone, datamodule, cache_dir=args.cache_dir)
    model.eval()
    datamodule.set_tokenizer(tokenizer, prompt_bos=cfg.get("prompt_bos", True))
    datamodule.eval_batch_size = args.batch_size
    loader = datamodule.eval_dataloader("test")
    batches, rows = [], 0
    for batch in loader:
        if rows >= args.rows:
            break
        batches.append(batch)
        rows += len(batch["rows"])
    prompt_tokens = sum(int(b["prompt_mask"].sum()) for b in batches) / rows

    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, tuple[dict, str]] = {}
    for _ in range(args.repeats):
        for share in (True, False):
            seconds, metrics, predictions = run(
                model, tokenizer, batches, share, args.max_new_tokens
            )
            times[share].append(seconds)
            outputs[share] = (metrics, predictions)
    once, twice = min(times[True]) / rows, min(times[False]) / rows
    same_metrics = outputs[True][0] == outputs[False][0]
    same_predictions = outputs[True][1] == outputs[False][1]

    source = "LastFM" if data.startswith("real") else "synthetic dataset"
    print(f"# device: {machine_description('cpu')}; {load_at_start} at the start")
    print(
        f"{args.backbone}, {source}: the first {rows} test rows in batches of {args.batch_size}, "
        f"{prompt_tokens:.0f} prompt tokens per row, 20 candidates, "
        f"at most {args.max_new_tokens} new tokens; best of {args.repeats}"
    )
    print(f"{'prompt run':<22}{'s / row':>10}")
    print(f"{'twice (per protocol)':<22}{twice:>10.3f}")
    print(f"{'once (shared cache)':<22}{once:>10.3f}")
    print(
        f"speed-up {twice / once:.2f}x; same metrics: {same_metrics}; "
        f"same predictions: {same_predictions}"
    )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "backbone": args.backbone,
                    "rows": rows,
                    "batch_size": args.batch_size,
                    "s_per_row_twice": twice,
                    "s_per_row_once": once,
                    "speedup": twice / once,
                    "same_metrics": same_metrics,
                    "same_predictions": same_predictions,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
