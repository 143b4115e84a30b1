"""The paired table: each preference result minus the models it is compared with
(:mod:`recpo.report.references`), seed by seed, with seed-level tests Holm-adjusted within
their family."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from recpo.report.collect import Condition
from recpo.report.references import FAMILY_NOTE, Reference, comparisons, family_of, seed_differences
from recpo.report.stats import SeedTests, Stat, holm_by_family, seed_tests
from recpo.report.table import Table, build_table


@dataclass(frozen=True)
class PairedStat(Stat):
    """Mean ± std of per-seed differences, with their seed-level tests and the paired
    t-test's Holm-adjusted p within its family (:data:`FAMILY_NOTE`)."""

    tests: SeedTests | None = None
    family: tuple[str, ...] = ()
    p_t_holm: float = math.nan

    @classmethod
    def of_differences(cls, values: list[float], family: tuple[str, ...]) -> PairedStat:
        stat = Stat.of(values)
        return cls(stat.mean, stat.std, stat.n, seed_tests(values), family)

    def text(self) -> str:
        base = super().text()
        t = self.tests
        if t is None:
            return base
        t_text = (
            "t undefined (same difference in every seed)"
            if math.isnan(t.p_t)
            else f"t p={t.p_t:.2g}, Holm {self.p_t_holm:.2g}"
        )
        return f"{base}; {t_text}; sign +{t.positive}/−{t.negative} p={t.p_sign:.2g}"

    def columns(self) -> dict[str, float]:
        """The seed-level tests as CSV cells (NaN below two seeds)."""
        t = self.tests
        if t is None:
            return dict.fromkeys(
                ("t", "p_t", "p_t_holm", "sign_pos", "sign_neg", "p_sign"), math.nan
            )
        return {
            "t": t.t,
            "p_t": t.p_t,
            "p_t_holm": self.p_t_holm,
            "sign_pos": t.positive,
            "sign_neg": t.negative,
            "p_sign": t.p_sign,
        }


def paired_table(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """Per seed, a preference result minus the SFT model it started from (same job),
    minus the plain objective it extends (DynamicPO - DMPO, Top-K - DMPO) run with the
    same settings and seed, and for an ablation or Top-K minus the full method
    (:mod:`recpo.report.references`); mean ± std of those differences over the seeds."""
    po = [c for c in conditions if c.part == "po"]
    if not po:
        return None, "Paired differences skipped: no finished preference job"
    pairs, refs = comparisons(po)
    rows: list[Condition] = []
    against: dict[int, Reference] = {}
    for cond, ref in pairs:
        rows.append(Condition(cond.entries, cond.extras))  # one row per comparison
        against[id(rows[-1])] = ref

    def cell(cond: Condition, metric: str) -> Stat:
        ref = against[id(cond)]
        values = list(seed_differences(cond, ref, refs, split, metric).values())
        return PairedStat.of_differences(values, family_of(cond, ref))

    table = build_table(
        "paired",
        "Paired differences",
        "Each row: the method minus the model named in `minus`, seed by seed (the same SFT "
        "model; for a plain objective, or the full method an ablation or Top-K is compared "
        "with, the job with the same settings and seed), then mean ± sample std of the "
        "differences over the seeds. Seed-level tests, each seed one observation: t p = "
        "two-sided paired t-test of the differences (n − 1 degrees of freedom), Holm = that "
        "p adjusted within its family; sign = seeds above / below 0 and the two-sided exact "
        "sign test (with 3 seeds it is never below 0.25). " + FAMILY_NOTE,
        rows,
        lambda c: {"method": c.method, "minus": against[id(c)].label},
        split,
        cell=cell,
    )
    _adjust_seed_tests(table)
    return table, ""


def _adjust_seed_tests(table: Table) -> None:
    """Fill in each cell's Holm-adjusted paired-t p, over the cells of its family."""
    adjusted = holm_by_family(
        (stat.family, (r, key), stat.tests.p_t)
        for r, (_, cells) in enumerate(table.rows)
        for key, stat in cells.items()
        if isinstance(stat, PairedStat) and stat.tests and not math.isnan(stat.tests.p_t)
    )
    for (r, key), p in adjusted.items():
        cells = table.rows[r][1]
        cells[key] = dataclasses.replace(cells[key], p_t_holm=p)
