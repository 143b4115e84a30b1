"""The tables of a report, each built when the conditions support it: the paper's Table 2
(methods × datasets), Table 4 (objectives with and without DynamicPO), Table 6
(ablations), Table 7 (Top-K vs DynamicPO), the paired differences and their tests
(:mod:`recpo.report.paired`, :mod:`recpo.report.significance`) and a summary of the
training logs. Which objective plays which part comes from its class
(:mod:`recpo.report.methods`)."""

from __future__ import annotations

from recpo.report.collect import Condition, orderable
from recpo.report.curves import TRAINING, training_stat
from recpo.report.labels import CONTEXT, switch_text
from recpo.report.methods import is_full_plugin, is_plain, settings_text, switched
from recpo.report.paired import paired_table
from recpo.report.significance import claim_table, row_test_table
from recpo.report.table import Table, TextTable, build_table


def _method(cond: Condition) -> dict[str, str]:
    return {"method": cond.method}


def _full_plugin(cond: Condition) -> bool:
    return is_full_plugin(cond.objective, cond.factors)


def table2(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """Every method on every dataset (the paper's Table 2, with the ranking metrics)."""
    note = (
        "HitRatio@1 / ValidRatio: generation (the paper's protocol); rank: likelihood "
        "ranking of the candidates. SFT rows come from the SFT stage of the jobs (once per "
        "seed); traditional baselines rank the candidates, so their HitRatio@1 is their rank "
        "HR@1 and their ValidRatio 1."
    )
    return build_table("table2", "Table 2: methods", note, conditions, _method, split), ""


def table4(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """Each plain objective ("naive") beside the DynamicPO plug-in whose ``base`` it is."""
    chosen = []
    for cond in conditions:
        if cond.objective is not None and is_plain(cond.objective):
            chosen.append((cond, cond.objective, "naive"))
        elif _full_plugin(cond):
            chosen.append((cond, cond.objective.base, "DynamicPO"))
    pairs = {base for _, base, v in chosen if v == "naive"}
    pairs &= {base for _, base, v in chosen if v == "DynamicPO"}
    if not pairs:
        found = sorted({c.method for c, _, _ in chosen}) or ["none"]
        return None, (
            "Table 4 (objective × with/without DynamicPO) skipped: needs a plain objective "
            "(DMPO, S-DPO or MPPO) and its DynamicPO version; found " + ", ".join(found)
        )
    kept = [(c, b, v) for c, b, v in chosen if b in pairs]
    labels = {id(c): {"objective": b.label, "variant": v} for c, b, v in kept}
    ranks = {
        id(c): (*b.order, *(orderable(c.factors.get(n)) for n in CONTEXT), v) for c, b, v in kept
    }
    table = build_table(
        "table4",
        "Table 4: DynamicPO on each multi-negative objective",
        "",
        [c for c, _, _ in kept],
        lambda c: labels[id(c)],
        split,
        order=lambda c: ranks[id(c)],
    )
    return table, ""


def table6(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """DynamicPO with Stage I, Stage II and dynamic β switched off, beside the plain
    objective and the full method."""
    families = {
        c.objective.base
        for c in conditions
        if c.objective is not None and c.objective.base and not _full_plugin(c)
    }
    if not families:
        return None, (
            "Table 6 (ablations) skipped: no DynamicPO job with objective.stage1, "
            "objective.stage2 or objective.dynamic_beta switched off"
        )
    chosen = [
        c
        for c in conditions
        if c.objective is not None and (c.objective in families or c.objective.base in families)
    ]
    table = build_table(
        "table6",
        "Table 6: ablations of DynamicPO",
        "w/o Stage (I & II) & dynamic β is the plain objective.",
        chosen,
        _method,
        split,
    )
    return table, ""


def table7(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """Top-K selection (objectives that are a ``variant_of`` a full method) against the
    full method's boundary selection."""
    topk = [c for c in conditions if c.objective is not None and c.objective.variant_of]
    wanted = {c.objective.variant_of for c in topk}
    dynamic = [c for c in conditions if _full_plugin(c) and (c.objective in wanted or not topk)]
    if not topk or not dynamic:
        missing = " and ".join(
            w for w, have in (("Top-K", topk), ("DynamicPO (all switches on)", dynamic)) if not have
        )
        return None, f"Table 7 (Top-K vs DynamicPO) skipped: no finished {missing} job"

    def label(cond: Condition) -> dict[str, str]:
        objective = cond.objective
        if objective.variant_of:
            shown = settings_text(objective, cond.first.job.config)
            strategy = shown + switch_text(*switched(objective, cond.factors))
            return {"method": objective.label, "strategy": strategy}
        return {"method": objective.label, "strategy": objective.label}

    table = build_table(
        "table7", "Table 7: Top-K vs DynamicPO", "", [*topk, *dynamic], label, split
    )
    return table, ""


def training_table(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """Numbers behind the training figures: negatives selected per example, reward win
    rate in the last 20% of training, boundary-critical share in the first and last
    third, and the mean β over the selected negatives, logged by the objectives that
    set β per negative (each a per-seed mean of the logged steps, then mean ± std over
    seeds)."""
    logged = [
        c
        for c in conditions
        if c.part == "po" and any(training_stat(c, name).n for name in TRAINING)
    ]
    if not logged:
        return None, (
            "Training summary skipped: no finished preference job has a training log "
            "(logs/po/metrics.csv)"
        )
    table = build_table(
        "training",
        "Training summary",
        "From logs/po/metrics.csv (training batches, not an evaluation split); intervals "
        "are fractions of each job's logged steps.",
        logged,
        _method,
        "train",
        metrics=list(TRAINING),
        cell=training_stat,
        titles={name: spec[0] for name, spec in TRAINING.items()},
    )
    return table, ""


# Every table of a report, in the order report.md shows them; each returns its table or
# the reason it was skipped.
TABLES = (table2, table4, table6, table7, paired_table, claim_table, row_test_table, training_table)


def make_tables(
    conditions: list[Condition], split: str
) -> tuple[list[Table | TextTable], list[str]]:
    """The tables the conditions support, and one line per table skipped."""
    tables, skipped = [], []
    for build in TABLES:
        table, reason = build(conditions, split)
        if table is not None:
            tables.append(table)
        else:
            skipped.append(reason)
    return tables, skipped
