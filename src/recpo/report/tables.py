"""Tables shaped like the paper's: Table 2 (methods × datasets), Table 4 (objectives with
and without DynamicPO), Table 6 (ablations), Table 7 (Top-K vs DynamicPO); and paired
differences (each preference setting minus SFT, minus its plain objective, and an
ablation or Top-K minus the full DynamicPO, seed by seed), which take the seed-to-seed spread of the shared SFT model out of a comparison.

Every cell is the mean ± sample std over the seeds of one condition with its n; rows
are methods, plus a column for each setting (K, α, γ, backbone, ...) that varies among
the table's conditions, so a row never merges different settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd

from recpo.report.collect import (
    _BASES,
    _PLUGIN_NAMES,
    CONTEXT,
    METRICS,
    PLUGINS,
    TRAINING,
    Condition,
    Entry,
    ReportError,
    Stat,
    _orderable,
    is_full_plugin,
    method_rank,
    objective_name,
    sort_key,
    training_stat,
)
from recpo.report.rows import ROW_METRICS, RowOutcomes, RowTest, compare, row_outcomes
from recpo.report.stats import SeedTests, holm, seed_tests

CONTEXT_TITLES = {
    "backbone": "backbone",
    "tokenizer": "tokenizer",
    "candidates": "candidates",
    "stages": "stages",
    "num_negatives": "K",
    "alpha": "α",
    "gamma": "γ",
}


def show(value) -> str:
    """A setting as a table cell: ``–`` for unset, lists joined with ``+``."""
    if value is None or value == "–":
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "+".join(show(v) for v in value)
    if isinstance(value, str) and value.startswith("["):
        try:
            return show(json.loads(value))
        except json.JSONDecodeError:
            return value
    return str(value)


def protocol_note(conditions: list[Condition]) -> str:
    """Which candidate protocol (``data.candidates``) the conditions' figures come from:
    under ``published`` the lists reveal the target (the README's Data section)."""
    values = sorted({show(c.factors.get("candidates")) for c in conditions} - {"–"})
    if not values:
        return ""
    if len(values) == 1:
        return f"Candidate lists (`data.candidates`): {values[0]}. "
    return f"Candidate lists (`data.candidates`): {', '.join(values)}, named in each row. "


@dataclass
class Table:
    """A table: row-label columns, then one cell per (dataset, metric)."""

    name: str
    title: str
    note: str
    columns: list[str]
    rows: list[tuple[list[str], dict[tuple[str, str], Stat]]]
    datasets: list[str]
    metrics: list[str]
    split: str
    titles: dict[str, str] = field(default_factory=lambda: dict(METRICS))

    def frame(self) -> pd.DataFrame:
        """Wide CSV layout: the label columns, then ``<dataset>/<metric>/{mean,std,n}``."""
        records = []
        for labels, cells in self.rows:
            record: dict[str, object] = dict(zip(self.columns, labels, strict=True))
            for dataset in self.datasets:
                for metric in self.metrics:
                    stat = cells.get((dataset, metric), Stat(math.nan, math.nan, 0))
                    record[f"{dataset}/{self.split}/{metric}/mean"] = stat.mean
                    record[f"{dataset}/{self.split}/{metric}/std"] = stat.std
                    record[f"{dataset}/{self.split}/{metric}/n"] = stat.n
                    if isinstance(stat, PairedStat):
                        for name, value in stat.columns().items():
                            record[f"{dataset}/{self.split}/{metric}/{name}"] = value
            records.append(record)
        return pd.DataFrame.from_records(records)

    def markdown(self) -> str:
        one = len(self.datasets) == 1
        heads = [
            self.titles[m] if one else f"{d} {self.titles[m]}"
            for d in self.datasets
            for m in self.metrics
        ]
        header = [*self.columns, *heads]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] * len(self.columns) + ["---:"] * len(heads)) + "|",
        ]
        for labels, cells in self.rows:
            values = [
                cells.get((d, m), Stat(math.nan, math.nan, 0)).text()
                for d in self.datasets
                for m in self.metrics
            ]
            lines.append("| " + " | ".join([*labels, *values]) + " |")
        where = f"dataset {self.datasets[0]}, " if one else ""
        caption = (
            f"**{self.title}** ({where}{self.split} split; mean ± sample std over seeds, "
            "n = seeds). " + self.note
        ).strip()
        return caption + "\n\n" + "\n".join(lines) + "\n"


def build_table(
    name: str,
    title: str,
    note: str,
    conditions: list[Condition],
    label: Callable[[Condition], dict[str, str]],
    split: str,
    metrics: list[str] | None = None,
    order: Callable[[Condition], tuple] | None = None,
    cell: Callable[[Condition, str], Stat] | None = None,
    titles: dict[str, str] | None = None,
) -> Table:
    """Rows: ``label(cond)`` plus the settings that vary among ``conditions``, in the
    order of ``order(cond)`` (default: paper order of methods, then settings); columns:
    each dataset × metric."""
    metrics = metrics or list(METRICS)
    context = [
        n
        for n in CONTEXT
        if len({json.dumps(c.factors.get(n)) for c in conditions if c.factors.get(n) is not None})
        > 1
    ]
    extras = sorted(
        {
            k
            for k in {k for c in conditions for k in c.extras}
            if len({json.dumps(c.extras.get(k, "–"), default=str) for c in conditions}) > 1
        }
    )
    datasets = sorted({str(c.factors["dataset"]) for c in conditions})
    columns: list[str] = []
    rows: dict[tuple[str, ...], dict[str, Condition]] = {}
    row_rank: dict[tuple[str, ...], tuple] = {}
    for cond in conditions:
        head = label(cond)
        columns = list(head) + [CONTEXT_TITLES[n] for n in context] + extras
        key = (
            *head.values(),
            *(show(cond.factors.get(n)) for n in context),
            *(show(cond.extras.get(k, "–")) for k in extras),
        )
        dataset = str(cond.factors["dataset"])
        slot = rows.setdefault(key, {})
        if dataset in slot:
            raise ReportError(
                f"{title}: two settings share the row {' / '.join(key)} on {dataset}: "
                f"{slot[dataset].first.job.path} and {cond.first.job.path}"
            )
        slot[dataset] = cond
        rank = order(cond) if order else sort_key(cond)[1:]
        row_rank[key] = min(row_rank.get(key, rank), rank)
    table_rows = []
    for key in sorted(rows, key=lambda k: row_rank[k]):
        cells = {
            (d, m): cell(cond, m) if cell else cond.stat(split, m)
            for d, cond in rows[key].items()
            for m in metrics
        }
        table_rows.append((list(key), cells))
    note = protocol_note(conditions) + note
    table = Table(name, title, note, columns, table_rows, datasets, metrics, split)
    if titles:
        table.titles = titles
    return table


def _method(cond: Condition) -> dict[str, str]:
    return {"method": cond.method}


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
    """Each multi-negative objective, plain ("naive") and with DynamicPO."""
    chosen: list[tuple[Condition, str, str]] = []
    for cond in conditions:
        name = objective_name(cond.first)
        if name in ("dmpo", "sdpo", "mppo"):
            chosen.append((cond, name, "naive"))
        elif cond.stage == "po" and is_full_plugin(cond.first):
            chosen.append((cond, PLUGINS[name], "DynamicPO"))
    pairs = {base for _, base, v in chosen if v == "naive"}
    pairs &= {base for _, base, v in chosen if v == "DynamicPO"}
    if not pairs:
        found = sorted({c.method for c, _, _ in chosen}) or ["none"]
        return None, (
            "Table 4 (objective × with/without DynamicPO) skipped: needs a plain objective "
            "(DMPO, S-DPO or MPPO) and its DynamicPO version; found " + ", ".join(found)
        )
    kept = [(c, b, v) for c, b, v in chosen if b in pairs]
    labels = {id(c): {"objective": _BASES[b], "variant": v} for c, b, v in kept}
    ranks = {
        id(c): (list(_BASES).index(b), *(_orderable(c.factors.get(n)) for n in CONTEXT), v)
        for c, b, v in kept
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
        PLUGINS[objective_name(c.first)]
        for c in conditions
        if objective_name(c.first) in PLUGINS and not is_full_plugin(c.first)
    }
    if not families:
        return None, (
            "Table 6 (ablations) skipped: no DynamicPO job with objective.stage1, "
            "objective.stage2 or objective.dynamic_beta switched off"
        )
    chosen = [
        c
        for c in conditions
        if objective_name(c.first) in families
        or (objective_name(c.first) in PLUGINS and PLUGINS[objective_name(c.first)] in families)
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
    """Top-K selection against DynamicPO's boundary selection."""
    topk = [c for c in conditions if objective_name(c.first) == "topk"]
    dynamic = [
        c for c in conditions if objective_name(c.first) == "dynamicpo" and is_full_plugin(c.first)
    ]
    if not topk or not dynamic:
        missing = " and ".join(
            w for w, have in (("Top-K", topk), ("DynamicPO (all switches on)", dynamic)) if not have
        )
        return None, f"Table 7 (Top-K vs DynamicPO) skipped: no finished {missing} job"

    def label(cond: Condition) -> dict[str, str]:
        if objective_name(cond.first) == "topk":
            f = cond.first.factors
            extra = " + dynamic β" if f.get("dynamic_beta") else ""
            return {"method": "Top-K", "strategy": f"k={f.get('k')}{extra}"}
        return {"method": "DynamicPO", "strategy": "DynamicPO"}

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
        if c.stage == "po" and any(training_stat(c, name).n for name in TRAINING)
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


# The plain objective a preference objective is compared with in the paired table.
PAIRED_WITH = {**PLUGINS, "topk": "dmpo", "beta_dpo": "dmpo"}


def _pairing(entry: Entry) -> tuple[str, object]:
    """What a result is paired on: every setting of its job outside the objective
    node, and its seed."""
    rest = {k: v for k, v in entry.job.settings.items() if not k.startswith("objective.")}
    return json.dumps(rest, sort_keys=True, default=str), json.dumps(entry.seed, default=str)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def sft_differences(cond: Condition, split: str, metric: str) -> list[float]:
    """The condition's result minus the SFT result of the same job (the model it
    started from), one value per seed."""
    values = []
    for entry in cond.entries:
        mine = entry.metrics.get(f"{split}/{metric}")
        sft = (entry.job.results or {}).get(f"sft:{split}/{metric}")
        if _finite(mine) and _finite(sft):
            values.append(mine - sft)
    return values


def paired_stat(cond: Condition, split: str, metric: str) -> Stat:
    """Mean ± std over the seeds of :func:`sft_differences`."""
    return Stat.of(sft_differences(cond, split, metric))


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


# Objective settings a variant may change against the full method it is paired with:
# the switches an ablation turns off, and what makes Top-K its own objective.
_VARIANT_KEYS = {f"objective.{k}" for k in ("_target_", "stage1", "stage2", "dynamic_beta", "k")}


def _full_family(entry: Entry) -> str | None:
    """The DynamicPO plug-in an ablation (a switch off) or Top-K is a variant of; Top-K
    replaces the boundary selection of DynamicPO on DMPO."""
    name = objective_name(entry)
    if name in PLUGINS and not is_full_plugin(entry):
        return name
    return "dynamicpo" if name == "topk" else None


@dataclass
class References:
    """The results a preference result is compared with, seed by seed: its plain
    objective (DynamicPO - DMPO, Top-K - DMPO) run with the same settings and seed, and
    for an ablation or Top-K the full method with the same settings, seed and objective
    settings (β, α, γ, ...) but the variant's own (:data:`_VARIANT_KEYS`)."""

    plain_names: ClassVar[frozenset[str]] = frozenset(_BASES.values())
    plain: dict[tuple[str, tuple[str, object]], Entry] = field(default_factory=dict)
    full: dict[tuple[str, tuple[str, object]], list[Entry]] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        name = objective_name(entry)
        if name in _BASES:
            self.plain[(_BASES[name], _pairing(entry))] = entry
        elif name in PLUGINS and is_full_plugin(entry):
            self.full.setdefault((_PLUGIN_NAMES[name], _pairing(entry)), []).append(entry)

    def names(self, entry: Entry) -> list[str]:
        """Every reference name this result has a partner under, in table order."""
        out = []
        base = PAIRED_WITH.get(str(objective_name(entry)))
        if base and (_BASES[base], _pairing(entry)) in self.plain:
            out.append(_BASES[base])
        family = _full_family(entry)
        if family and self.get(entry, _PLUGIN_NAMES[family]) is not None:
            out.append(_PLUGIN_NAMES[family])
        return out

    def get(self, entry: Entry, name: str) -> Entry | None:
        """The partner of ``entry`` named ``name`` (None when there is none, or when
        several full-method results would fit and the comparison is ambiguous)."""
        if name in self.plain_names:
            return self.plain.get((name, _pairing(entry)))
        mine = _objective_settings(entry)
        fits = [
            ref
            for ref in self.full.get((name, _pairing(entry)), [])
            if all(mine[k] == v for k, v in _objective_settings(ref).items() if k in mine)
        ]
        return fits[0] if len(fits) == 1 else None


def _objective_settings(entry: Entry) -> dict[str, object]:
    return {
        k: v
        for k, v in entry.job.settings.items()
        if k.startswith("objective.") and k not in _VARIANT_KEYS
    }


def _minus_rank(name: str) -> int:
    """Comparisons of one method in table order: SFT, its plain objective, the full method."""
    return 0 if name == "SFT" else 1 if name in References.plain_names else 2


def _pairs(po: list[Condition]) -> tuple[list[tuple[Condition, str]], References]:
    """Each preference condition against ``SFT``, and against every reference
    (:class:`References`) that one of its seeds has."""
    refs = References()
    for cond in po:
        for entry in cond.entries:
            refs.add(entry)
    pairs: list[tuple[Condition, str]] = []
    for cond in po:
        pairs.append((cond, "SFT"))
        found = {n for e in cond.entries for n in refs.names(e)}
        pairs += [(cond, n) for n in sorted(found, key=_minus_rank)]
    return pairs, refs


def seed_differences(
    cond: Condition, name: str, refs: References, split: str, metric: str
) -> dict[str, float]:
    """Per seed (its JSON text), the condition's result minus the model named ``name``:
    ``SFT`` (the SFT stage of the same job) or a reference of :class:`References`."""
    out = {}
    for entry in cond.entries:
        mine = entry.metrics.get(f"{split}/{metric}")
        if name == "SFT":
            theirs = (entry.job.results or {}).get(f"sft:{split}/{metric}")
        else:
            base = refs.get(entry, name)
            theirs = None if base is None else base.metrics.get(f"{split}/{metric}")
        if _finite(mine) and _finite(theirs):
            out[json.dumps(entry.seed, default=str)] = mine - theirs
    return out


def paired_table(conditions: list[Condition], split: str) -> tuple[Table | None, str]:
    """Per seed, a preference result minus the SFT model it started from (same job),
    minus the plain objective it extends (DynamicPO - DMPO, Top-K - DMPO) run with the
    same settings and seed, and for an ablation or Top-K minus the full method
    (:class:`References`); mean ± std of those differences over the seeds."""
    po = [c for c in conditions if c.stage == "po"]
    if not po:
        return None, "Paired differences skipped: no finished preference job"
    pairs, refs = _pairs(po)
    rows: list[Condition] = []
    against: dict[int, str] = {}
    for cond, name in pairs:
        rows.append(Condition(cond.entries, cond.extras))  # one row per comparison
        against[id(rows[-1])] = name

    def cell(cond: Condition, metric: str) -> Stat:
        name = against[id(cond)]
        values = list(seed_differences(cond, name, refs, split, metric).values())
        return PairedStat.of_differences(values, _family(cond, name))

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
        lambda c: {"method": c.method, "minus": against[id(c)]},
        split,
        cell=cell,
    )
    _adjust_seed_tests(table)
    return table, ""


def _adjust_seed_tests(table: Table) -> None:
    """Fill in each cell's Holm-adjusted paired-t p, over the cells of its family."""
    where: dict[tuple[str, ...], list[tuple[int, tuple[str, str]]]] = {}
    for r, (_, cells) in enumerate(table.rows):
        for key, stat in cells.items():
            if isinstance(stat, PairedStat) and stat.tests and not math.isnan(stat.tests.p_t):
                where.setdefault(stat.family, []).append((r, key))
    for members in where.values():
        ps = [table.rows[r][1][key].tests.p_t for r, key in members]
        for (r, key), adjusted in zip(members, holm(ps), strict=True):
            cells = table.rows[r][1]
            cells[key] = dataclasses.replace(cells[key], p_t_holm=adjusted)


@dataclass
class TextTable:
    """A table of text cells (row-level tests): ``frame`` for the CSV, ``markdown``."""

    name: str
    title: str
    note: str
    columns: list[str]
    rows: list[list[str]]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
            *("| " + " | ".join(row) + " |" for row in self.rows),
        ]
        return f"**{self.title}**. {self.note}\n\n" + "\n".join(lines) + "\n"


# Settings that split tests into separate Holm families: a family holds the tests against
# one reference on the same rows (dataset, candidate lists, backbone); every method, K, α,
# γ, seed and metric within it is one more test of the family.
FAMILY_FACTORS = ("dataset", "backbone", "tokenizer", "candidates", "stages")
FAMILY_NOTE = (
    "Holm family: every test against the same reference (`minus`) on the same rows (one "
    "dataset, candidate protocol and backbone), over all methods, settings (K, α, γ, ...), "
    "seeds and metrics of the table; the Holm-adjusted p controls the chance of any false "
    "rejection in the family."
)


def _family(cond: Condition, name: str) -> tuple[str, ...]:
    return (name, *(show(cond.factors.get(n)) for n in FAMILY_FACTORS))


def _family_labels(families: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """A short name for each family: the reference and the family settings that vary."""
    varying = [i for i in range(1, len(FAMILY_FACTORS) + 1) if len({f[i] for f in families}) > 1]
    return {f: " · ".join([f"vs {f[0]}", *(f[i] for i in varying)]) for f in families}


def row_test_table(conditions: list[Condition], split: str) -> tuple[TextTable | None, str]:
    """The comparisons of the paired table, row by row for each seed: rows won and lost
    (right in one model and wrong in the other), the exact McNemar p-value, from the
    jobs' per-row predictions, and the Holm-adjusted p within its family
    (:data:`FAMILY_NOTE`)."""
    po = [c for c in conditions if c.stage == "po"]
    why = "Row-level tests skipped: "
    if not po:
        return None, why + "no finished preference job"
    pairs, refs = _pairs(po)
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
    for cond, name in pairs:
        for entry in cond.entries:
            mine = outcomes(entry.job.path, "po")
            if name == "SFT":
                theirs = outcomes(entry.job.path, "sft")
            else:
                base = refs.get(entry, name)
                theirs = None if base is None else outcomes(base.job.path, "po")
            if mine is None or theirs is None:
                continue
            tests = [compare(mine, theirs, m) for m in ROW_METRICS]
            if all(t is None for t in tests):
                continue
            counted = next(t.rows for t in tests if t is not None)
            label = [cond.method, name]
            label += [str(cond.factors["dataset"])] if len(datasets) > 1 else []
            label += [show(cond.factors.get(n)) for n in context]
            label += [show(entry.seed), str(counted)]
            order = (sort_key(cond), _minus_rank(name), _orderable(entry.seed))
            found.append((order, label, tests, _family(cond, name)))
    if not found:
        return None, why + (
            "no job has per-row predictions (eval/<stage>/<split>_predictions.jsonl or the "
            "exported <split>_hits.json)"
        )
    # Holm within each family, over every test of it (all rows and both metrics).
    members: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    for r, (_, _, tests, family) in enumerate(found):
        for j, t in enumerate(tests):
            if t is not None:
                members.setdefault(family, []).append((r, j))
    adjusted: dict[tuple[int, int], float] = {}
    for where in members.values():
        for key, value in zip(where, holm([found[r][2][j].p for r, j in where]), strict=True):
            adjusted[key] = value
    names = _family_labels(list(members))
    rows = []
    for r, (order, label, tests, family) in enumerate(found):
        cells = []
        for j, t in enumerate(tests):
            cells += ["–", "–"] if t is None else [t.text(), f"{adjusted[(r, j)]:.2g}"]
        rows.append((order, [*label, *cells, f"{names[family]} ({len(members[family])})"]))
    rows.sort(key=lambda r: r[0])
    note = (
        (f"Dataset {datasets[0]}, {split} split. " if len(datasets) == 1 else f"{split} split. ")
        + protocol_note(po)
        + (
            "Each row: one seed of the method against the model named in `minus` on the same "
            "rows; won = rows this method gets right and the other wrong, lost = the reverse; "
            "p = exact two-sided McNemar test on those rows; p Holm = the same p adjusted by "
            "Holm's step-down procedure within its family. " + FAMILY_NOTE
        )
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
    po = [c for c in conditions if c.stage == "po"]
    if not po:
        return None, "Claim-level tests skipped: no finished preference job"
    pairs, refs = _pairs(po)
    groups: dict[str, list[tuple[Condition, str]]] = {}
    for cond, name in pairs:
        fixed = {k: v for k, v in cond.factors.items() if k not in POOLED}
        # Settings run with other seeds (a one-seed α × γ grid beside a 3-seed K sweep)
        # make another claim row: a seed's mean must average the same settings.
        seeds = sorted(json.dumps(e.seed, default=str) for e in cond.entries)
        key = json.dumps(
            [cond.method, name, fixed, cond.extras, seeds], sort_keys=True, default=str
        )
        groups.setdefault(key, []).append((cond, name))
    context = [
        n
        for n in CONTEXT
        if n not in POOLED and len({json.dumps(c.factors.get(n), default=str) for c in po}) > 1
    ]
    datasets = sorted({str(c.factors["dataset"]) for c in po})
    metrics = list(ROW_METRICS)
    found = []
    for members in groups.values():
        cond, name = members[0]
        per_metric: list[tuple[float, SeedTests | None]] = []
        seeds_used = 0
        for metric in metrics:
            diffs = [seed_differences(c, n, refs, split, metric) for c, n in members]
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
            values = sorted({_orderable(c.factors.get(n)) for c, _ in members})
            if len(values) > 1:
                shown = ", ".join(show(c.factors.get(n)) for c, _ in _sorted_by(members, n))
                pooled.append(f"{CONTEXT_TITLES[n]} = {shown}")
        label = [cond.method, name, *([str(cond.factors["dataset"])] if len(datasets) > 1 else [])]
        label += [show(cond.factors.get(n)) for n in context]
        label += ["; ".join(pooled) or "–", str(seeds_used)]
        order = (sort_key(cond), _minus_rank(name))
        found.append((order, label, per_metric, _family(cond, name)))
    where: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    for r, (_, _, per_metric, family) in enumerate(found):
        for j, (_, tests) in enumerate(per_metric):
            if tests is not None and not math.isnan(tests.p_t):
                where.setdefault(family, []).append((r, j))
    adjusted: dict[tuple[int, int], float] = {}
    for members in where.values():
        ps = [found[r][2][j][1].p_t for r, j in members]
        adjusted.update(zip(members, holm(ps), strict=True))
    names = _family_labels([f for *_, f in found])
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
                cells += [f"{mean:+.4f}" if _finite(mean) else "–", "–", "–"]
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
    note = (
        (f"Dataset {datasets[0]}, {split} split. " if len(datasets) == 1 else f"{split} split. ")
        + protocol_note(po)
        + (
            "One test per claim: each seed's differences (method minus `minus`, as in the "
            "paired table) averaged over the settings in `pooled over` (those run with the same "
            "seeds), then a two-sided paired "
            "t-test over the seeds (t(df), p, and in brackets the Holm-adjusted p within the "
            "family, over this table's tests) and an exact sign test (seeds above / below 0; "
            "with 3 seeds never below 0.25). "
            + FAMILY_NOTE.replace("and metrics of the table", "and metrics of this table")
        )
    )
    return TextTable(
        "claim_tests", "Claim-level seed tests", note, columns, [r[1] for r in rows]
    ), ""


def _sorted_by(members: list[tuple[Condition, str]], name: str) -> list[tuple[Condition, str]]:
    """The members with distinct values of ``name``, in the order of those values."""
    seen: dict[str, tuple[Condition, str]] = {}
    for cond, ref in members:
        seen.setdefault(json.dumps(cond.factors.get(name), default=str), (cond, ref))
    return sorted(seen.values(), key=lambda m: _orderable(m[0].factors.get(name)))


def make_tables(conditions: list[Condition], split: str) -> tuple[list[Table], list[str]]:
    """The tables the conditions support, and one line per table skipped."""
    tables, skipped = [], []
    builds = (table2, table4, table6, table7, paired_table, claim_table, row_test_table)
    for build in (*builds, training_table):
        table, reason = build(conditions, split)
        if table is not None:
            tables.append(table)
        else:
            skipped.append(reason)
    return tables, skipped


__all__ = ["Table", "build_table", "make_tables", "method_rank", "show"]
