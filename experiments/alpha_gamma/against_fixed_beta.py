"""Each α × γ cell against DynamicPO with a fixed β (same seed, same selection), row by row.

The fixed-β job is the ablation "w/o dynamic β" of ``experiments/ablation`` (both
selection stages on, β = β0 for every selected negative). For each cell and metric:
rows won / lost against it, the exact McNemar p-value and its Holm-adjusted value over
all the tests of the table (every cell, both metrics: one family), as in ``row_tests.md``.

    python experiments/alpha_gamma/against_fixed_beta.py > experiments/alpha_gamma/against_fixed_beta.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from recpo.report.rows import compare, row_outcomes
from recpo.report.stats import holm

HERE = Path(__file__).resolve().parent
FIXED_BETA = (
    HERE.parent
    / "ablation"
    / "jobs"
    / (
        "+experiment=lastfm_study,objective.beta=5.0,objective.dynamic_beta=False,"
        "objective.stage1=True,objective.stage2=True,po.lr=1e-05,seed={seed}"
    )
)
METRICS = (("hr@1", "rank HR@1"), ("gen_hr@1", "HitRatio@1"))


def main() -> int:
    rows = []
    for job in sorted((HERE / "jobs").iterdir()):
        config = yaml.safe_load((job / "config.yaml").read_text())
        objective = config.get("objective", {})
        if "alpha" not in objective or not objective.get("dynamic_beta", True):
            continue
        seed = config["seed"]
        fixed_job = Path(str(FIXED_BETA).format(seed=seed))
        fixed = row_outcomes(fixed_job, "po", "test")
        if fixed is None:
            print(
                f"{fixed_job}: no test outcomes (run the ablation for seed {seed})", file=sys.stderr
            )
            return 1
        mine = row_outcomes(job, "po", "test")
        tests = [compare(mine, fixed, metric) for metric, _ in METRICS]
        rows.append((objective["alpha"], objective["gamma"], seed, tests))
    rows.sort(key=lambda r: r[:3])
    family = [t for *_, tests in rows for t in tests if t is not None]
    adjusted = iter(holm([t.p for t in family]))
    heads = [f"{title} won / lost (p) | {title} p Holm" for _, title in METRICS]
    print("| α | γ | seed | rows | " + " | ".join(heads) + " |")
    print("|---|---|---|---|" + "---|---|" * len(METRICS))
    for alpha, gamma, seed, tests in rows:
        cells = [f"{t.text()} | {next(adjusted):.2g}" if t is not None else "– | –" for t in tests]
        n = next(t.rows for t in tests if t is not None)
        print(f"| {alpha:g} | {gamma:g} | {seed} | {n} | " + " | ".join(cells) + " |")
    print(f"\nHolm over the {len(family)} tests of the table (every cell, both metrics).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
