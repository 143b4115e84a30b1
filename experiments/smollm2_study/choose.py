"""The grid's choice for the main phase: the DMPO lr and beta with the highest rank HR@1
on the full val split (`independent` lists), from the finished grid jobs.

    python experiments/smollm2_study/choose.py multirun/smollm2_study/grid
    # prints: po.lr=1e-05 objective.beta=5.0  (the table goes to stderr)

Every grid job must have finished (its results.json); a tie goes to the smaller learning
rate, then the smaller beta (the setting that moves the SFT model least).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

METRIC = "val/hr@1"
GRID_JOBS = 4


def grid_rows(grid: Path) -> list[tuple[float, float, float, int]]:
    """(val rank HR@1, lr, beta, val rows) of every finished job under ``grid``."""
    rows = []
    for results in sorted(grid.glob("*/results.json")):
        metrics = json.loads(results.read_text())
        cfg = OmegaConf.load(results.parent / "config.yaml")
        if METRIC not in metrics:
            sys.exit(f"{results}: no {METRIC!r} (a grid job evaluates the val split)")
        rows.append(
            (
                float(metrics[METRIC]),
                float(cfg.po.lr),
                float(cfg.objective.beta),
                int(metrics.get("val/rows", 0)),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path, help="the grid phase's folder")
    parser.add_argument("--jobs", type=int, default=GRID_JOBS, help="grid jobs expected")
    args = parser.parse_args(argv)
    rows = grid_rows(args.grid)
    if len(rows) != args.jobs:
        print(f"{args.grid}: {len(rows)} of {args.jobs} grid jobs finished", file=sys.stderr)
        return 1
    for hr, lr, beta, n in sorted(rows, key=lambda r: (r[1], r[2])):
        print(f"lr {lr:g}  beta {beta:g}  val rank HR@1 {hr:.4f}  ({n} rows)", file=sys.stderr)
    best = max(rows, key=lambda r: (r[0], -r[1], -r[2]))
    print(f"po.lr={best[1]!r} objective.beta={best[2]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
