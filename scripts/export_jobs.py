"""Copy what a report needs from the finished jobs of a sweep into a folder that can be
committed: each job's ``config.yaml``, ``results.json`` and training logs
(``logs/po/metrics.csv``, and ``logs/sft/metrics.csv`` where the job trained its SFT
model rather than reusing a stored one), and
per evaluated stage and split the rows it got right (``eval/<stage>/<split>_hits.json``,
made from the predictions, or copied where the job holds them already, for the
report's row-level tests): a few kB a job, no
checkpoints or predictions.

    python scripts/export_jobs.py multirun/negatives/lastfm-tiny experiments/collapse_curve/jobs

``python -m recpo.report experiments/collapse_curve/jobs`` then rebuilds the tables and
figures, and copying a job folder back under ``multirun/`` makes a sweep skip it.
Unfinished jobs are left out; files already exported are replaced only by newer ones.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from recpo.report.rows import hits_path, row_outcomes, write_hits

KEPT = ("config.yaml", "results.json", "logs/po/metrics.csv", "logs/sft/metrics.csv")


def _stale(out: Path, src: Path) -> bool:
    """``out`` is missing or older than the file it is made from."""
    return not out.is_file() or out.stat().st_mtime < src.stat().st_mtime


def export(source: Path, target: Path) -> tuple[int, int]:
    """Export every finished job under ``source``; returns (exported, unfinished)."""
    exported = unfinished = 0
    for config in sorted(source.rglob("config.yaml")):
        job = config.parent
        if job.name == ".hydra":
            continue
        if not (job / "results.json").is_file():
            unfinished += 1
            continue
        dest = target / job.relative_to(source)
        # Hits a job holds already: a stage evaluation restored from a stored one
        # (paths.sft_evals) brings its rows as hits, without predictions.
        for src in [*(job / name for name in KEPT), *sorted(job.glob("eval/*/*_hits.json"))]:
            out = dest / src.relative_to(job)
            if src.is_file() and _stale(out, src):
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out)
        for predictions in sorted(job.glob("eval/*/*_predictions.jsonl")):
            stage, split = (
                predictions.parent.name,
                predictions.name.removesuffix("_predictions.jsonl"),
            )
            out = hits_path(dest, stage, split)
            if _stale(out, predictions):
                outcomes = row_outcomes(job, stage, split)
                if outcomes is not None:
                    write_hits(outcomes, out)
        exported += 1
    return exported, unfinished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a sweep folder (or a folder of sweeps)")
    parser.add_argument("target", type=Path, help="where the job folders are copied")
    args = parser.parse_args()
    if not args.source.is_dir():
        raise SystemExit(f"{args.source}: no such folder")
    exported, unfinished = export(args.source, args.target)
    print(f"{exported} finished jobs exported to {args.target}; {unfinished} unfinished left out")


if __name__ == "__main__":
    main()
