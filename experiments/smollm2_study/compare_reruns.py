"""A job run again (``run.sh rerun NAME``, e.g. on another CPU kind) against the same
job of the main phase, row by row on the test split.

    python experiments/smollm2_study/compare_reruns.py \\
        experiments/smollm2_study/jobs/main experiments/smollm2_study/jobs/rerun-amx

For every job folder in the rerun folder that the main folder holds too, and for each
stage (the SFT model, the PO model) and row metric (rank HR@1, generation HR@1):
the rows each run got right, the rows on which the two runs disagree, and the PO-vs-SFT
row test (exact McNemar) within each run, so a reader sees how far a job's figures move
when nothing but the floats' last bits changed, against the effects the study measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recpo.report.rows import ROW_METRICS, RowOutcomes, compare, row_outcomes

STAGES = ("sft", "po")
LABELS = {"hr@1": "rank HR@1", "gen_hr@1": "HitRatio@1"}


def outcomes(job: Path, stage: str) -> RowOutcomes:
    found = row_outcomes(job, stage, "test")
    if found is None:
        sys.exit(f"{job}: no test rows for stage {stage!r} (eval/{stage}/test_hits.json)")
    return found


def hits(found: RowOutcomes, metric: str) -> int:
    return int(found.hits[metric].sum())


def job_lines(main: Path, rerun: Path) -> list[str]:
    """Markdown table rows for one job: per metric, each stage in both runs and the
    PO-vs-SFT test within each run."""
    runs = {
        name: {s: outcomes(job, s) for s in STAGES} for name, job in (("a", main), ("b", rerun))
    }
    lines = []
    for metric in ROW_METRICS:
        if any(metric not in runs[r][s].hits for r in runs for s in STAGES):
            continue
        cells = [f"`{rerun.name}`", LABELS[metric]]
        for stage in STAGES:
            a, b = runs["a"][stage], runs["b"][stage]
            between = compare(b, a, metric)
            assert between is not None
            cells.append(f"{hits(a, metric)} / {hits(b, metric)} ({between.won + between.lost})")
        for run in ("a", "b"):
            test = compare(runs[run]["po"], runs[run]["sft"], metric)
            assert test is not None
            cells.append(test.text())
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("main", type=Path, help="the main phase's exported jobs")
    parser.add_argument("rerun", type=Path, help="the rerun's exported jobs")
    args = parser.parse_args()
    pairs = [
        (args.main / job.name, job)
        for job in sorted(p for p in args.rerun.iterdir() if (p / "results.json").is_file())
        if (args.main / job.name / "results.json").is_file()
    ]
    if not pairs:
        sys.exit(f"no finished job of {args.rerun} is in {args.main} too")
    print(
        "| job | metric | SFT rows right: main / rerun (rows that differ) "
        "| PO rows right: main / rerun (rows that differ) "
        "| PO vs SFT, main: +won / −lost (McNemar p) | PO vs SFT, rerun |"
    )
    print("|---|---|---|---|---|---|")
    for main_job, rerun_job in pairs:
        print("\n".join(job_lines(main_job, rerun_job)))


if __name__ == "__main__":
    main()
