"""Tests of the paired comparisons: row-level McNemar tests (each seed, on the rows both
models were evaluated on) and claim-level seed tests (one per claim, pooled over K, α,
γ), each Holm-adjusted within its family."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from recpo.report.collect import Condition, orderable, sort_key
from recpo.report.labels import CONTEXT, CONTEXT_TITLES, METRICS, show
from recpo.report.references import (
    FAMILY_NOTE,
    Reference,
    comparisons,
    family_labels,
    family_of,
    finite,
    minus_rank,
    seed_differences,
)
from recpo.report.rows import ROW_METRICS, RowOutcomes, RowTest, compare, row_outcomes
from recpo.report.stats import SeedTests, Stat, holm_by_family, seed_tests
from recpo.report.table import TextTable, protocol_note


def row_test_table(conditions: list[Condition], split: str) -> tuple[TextTable | None, str]:
    """The comparisons of the paired table, row by row for each seed: rows won and lost
    (right in one model and wrong in the other), the exact McNemar p-value, from the
    jobs' per-row predictions, and the Holm-adjusted p within its family
    (:data:`FAMILY_NOTE`)."""
    po = [c for c in conditions if c.part == "po"]
    why = "Row-level tests skipped: "
    if not po:
        return None, why + "no finished preference job"
    pairs, refs = comparisons(po)
    context = [
        n for n in CONTEXT if len({json.dumps(c.factors.get(n), default=str) for c in po}) > 1
    ]
    datasets = sorted({str(c.factors["dataset"]) for c in po})
    columns = ["method", "minus", *(["dataset"] if len(datasets) > 1 else [])]
    columns += [CONTEXT_TITLES[n] for n in context] + ["seed", "rows"]
    for m in ROW_METRICS:
        columns += [f"{METRICS[m]} won / lost (p)", f"{METRICS[m]} p Holm"]
    columns.append("Holm family (tests)")
    read: dict[tuple[Path, str], RowOutcomes | None] = {}

    def outcomes(job: Path, stage: str) -> RowOutcomes | None:
        # A job is compared with its SFT model and its references, and a reference
        # with every method paired with it: each file is read once.
        if (job, stage) not in read:
            read[(job, stage)] = row_outcomes(job, stage, split)
        return read[(job, stage)]

    found: list[tuple[tuple, list[str], list[RowTest | None], tuple[str, ...]]] = []
    for cond, ref in pairs:
        for entry in cond.entries:
            mine = outcomes(entry.job.path, "po")
            if ref.objective is None:
                theirs = outcomes(entry.job.path, "sft")
            else:
                other = refs.get(entry, ref)
                theirs = None if other is None else outcomes(other.job.path, "po")
            if mine is None or theirs is None:
                continue
            tests = [compare(mine, theirs, m) for m in ROW_METRICS]
            if all(t is None for t in tests):
                continue
            counted = next(t.rows for t in tests if t is not None)
            label = [cond.method, ref.label]
            label += [str(cond.factors["dataset"])] if len(datasets) > 1 else []
            label += [show(cond.factors.get(n)) for n in context]
            label += [show(entry.seed), str(counted)]
            order = (sort_key(cond), minus_rank(ref), orderable(entry.seed))
            found.append((order, label, tests, family_of(cond, ref)))
    if not found:
        return None, why + (
            "no job has per-row predictions (eval/<stage>/<split>_predictions.jsonl or the "
            "exported <split>_hits.json)"
        )
    # Holm within each family, over every test of it (all rows and both metrics).
    tests_of = [
        (family, (r, j), t.p)
        for r, (_, _, tests, family) in enumerate(found)
        for j, t in enumerate(tests)
        if t is not None
    ]
    adjusted = holm_by_family(tests_of)
    counts = Counter(family for family, _, _ in tests_of)
    names = family_labels(list(counts))
    rows = []
    for r, (order, label, tests, family) in enumerate(found):
        cells = []
        for j, t in enumerate(tests):
            cells += ["–", "–"] if t is None else [t.text(), f"{adjusted[(r, j)]:.2g}"]
        rows.append((order, [*label, *cells, f"{names[family]} ({counts[family]})"]))
    rows.sort(key=lambda r: r[0])
    note = _where(datasets, split, po) + (
        "Each row: one seed of the method against the model named in `minus` on the same "
        "rows; won = rows this method gets right and the other wrong, lost = the reverse; "
        "p = exact two-sided McNemar test on those rows; p Holm = the same p adjusted by "
        "Holm's step-down procedure within its family. " + FAMILY_NOTE
    )
    return TextTable("row_tests", "Row-level tests", note, columns, [r[1] for r in rows]), ""


# Settings a claim is pooled over: "DynamicPO beats DMPO" is one claim across K, α, γ.
POOLED = ("num_negatives", "alpha", "gamma")


def claim_table(conditions: list[Condition], split: str) -> tuple[TextTable | None, str]:
    """One seed-level test per claim: each comparison of the paired table (method minus
    ``minus``, on one dataset, protocol and backbone), its per-seed differences averaged
    over the settings it was run at with the same seeds (K, α, γ), then a paired t-test
    and a sign test over
    the seeds, Holm-adjusted within the family (:data:`FAMILY_NOTE`). A single test per
    claim, instead of one per K, that still treats each seed as one observation."""
    po = [c for c in conditions if c.part == "po"]
    if not po:
        return None, "Claim-level tests skipped: no finished preference job"
    pairs, refs = comparisons(po)
    groups: dict[str, list[tuple[Condition, Reference]]] = {}
    for cond, ref in pairs:
        fixed = {k: v for k, v in cond.factors.items() if k not in POOLED}
        # Settings run with other seeds (a one-seed α × γ grid beside a 3-seed K sweep)
        # make another claim row: a seed's mean must average the same settings.
        seeds = sorted(json.dumps(e.seed, default=str) for e in cond.entries)
        key = json.dumps(
            [cond.method, ref.label, fixed, cond.extras, seeds], sort_keys=True, default=str
        )
        groups.setdefault(key, []).append((cond, ref))
    context = [
        n
        for n in CONTEXT
        if n not in POOLED and len({json.dumps(c.factors.get(n), default=str) for c in po}) > 1
    ]
    datasets = sorted({str(c.factors["dataset"]) for c in po})
    metrics = list(ROW_METRICS)
    found = []
    for members in groups.values():
        cond, ref = members[0]
        per_metric: list[tuple[float, SeedTests | None]] = []
        seeds_used = 0
        for metric in metrics:
            diffs = [seed_differences(c, r, refs, split, metric) for c, r in members]
            # Seeds with a difference at every pooled setting, so each seed averages the
            # same settings.
            common = set.intersection(*(set(d) for d in diffs))
            means = [sum(d[s] for d in diffs) / len(diffs) for s in sorted(common)]
            seeds_used = max(seeds_used, len(means))
            per_metric.append((Stat.of(means).mean, seed_tests(means)))
        if not seeds_used:
            continue
        pooled = []
        for n in POOLED:
            values = sorted({orderable(c.factors.get(n)) for c, _ in members})
            if len(values) > 1:
                shown = ", ".join(show(c.factors.get(n)) for c, _ in _sorted_by(members, n))
                pooled.append(f"{CONTEXT_TITLES[n]} = {shown}")
        label = [cond.method, ref.label]
        label += [str(cond.factors["dataset"])] if len(datasets) > 1 else []
        label += [show(cond.factors.get(n)) for n in context]
        label += ["; ".join(pooled) or "–", str(seeds_used)]
        order = (sort_key(cond), minus_rank(ref))
        found.append((order, label, per_metric, family_of(cond, ref)))
    adjusted = holm_by_family(
        (family, (r, j), tests.p_t)
        for r, (_, _, per_metric, family) in enumerate(found)
        for j, (_, tests) in enumerate(per_metric)
        if tests is not None and not math.isnan(tests.p_t)
    )
    names = family_labels([f for *_, f in found])
    columns = ["method", "minus", *(["dataset"] if len(datasets) > 1 else [])]
    columns += [CONTEXT_TITLES[n] for n in context] + ["pooled over", "seeds"]
    for m in metrics:
        columns += [f"{METRICS[m]} mean", f"{METRICS[m]} t p (Holm)", f"{METRICS[m]} sign"]
    columns.append("Holm family")
    rows = []
    for r, (order, label, per_metric, family) in enumerate(found):
        cells = []
        for j, (mean, tests) in enumerate(per_metric):
            if tests is None:
                cells += [f"{mean:+.4f}" if finite(mean) else "–", "–", "–"]
                continue
            if math.isnan(tests.p_t):
                t_text = "undefined (same difference in every seed)"
            else:
                t_text = (
                    f"t({tests.n - 1}) = {tests.t:.2f}, p={tests.p_t:.2g} ({adjusted[(r, j)]:.2g})"
                )
            sign = f"+{tests.positive}/−{tests.negative} p={tests.p_sign:.2g}"
            cells += [f"{mean:+.4f}", t_text, sign]
        rows.append((order, [*label, *cells, names[family]]))
    rows.sort(key=lambda r: r[0])
    note = _where(datasets, split, po) + (
        "One test per claim: each seed's differences (method minus `minus`, as in the "
        "paired table) averaged over the settings in `pooled over` (those run with the same "
        "seeds), then a two-sided paired "
        "t-test over the seeds (t(df), p, and in brackets the Holm-adjusted p within the "
        "family, over this table's tests) and an exact sign test (seeds above / below 0; "
        "with 3 seeds never below 0.25). "
        + FAMILY_NOTE.replace("and metrics of the table", "and metrics of this table")
    )
    return TextTable(
        "claim_tests", "Claim-level seed tests", note, columns, [r[1] for r in rows]
    ), ""


def _where(datasets: list[str], split: str, po: list[Condition]) -> str:
    """The start of a test table's note: its dataset (when one), split and candidate lists."""
    where = f"Dataset {datasets[0]}, " if len(datasets) == 1 else ""
    return f"{where}{split} split. " + protocol_note(po)


def _sorted_by(
    members: list[tuple[Condition, Reference]], name: str
) -> list[tuple[Condition, Reference]]:
    """The members with distinct values of ``name``, in the order of those values."""
    seen: dict[str, tuple[Condition, Reference]] = {}
    for cond, ref in members:
        seen.setdefault(json.dumps(cond.factors.get(name), default=str), (cond, ref))
    return sorted(seen.values(), key=lambda m: orderable(m[0].factors.get(name)))
