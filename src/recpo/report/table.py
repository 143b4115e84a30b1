"""A table of the report: row-label columns, then one cell per (dataset, metric), each the
mean ± sample std over the seeds of one condition with its n; rows are methods, plus a
column for each setting (K, α, γ, backbone, ...) that varies among the table's
conditions, so a row never merges different settings."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from recpo.errors import ReportError
from recpo.report.collect import Condition, sort_key
from recpo.report.labels import CONTEXT, CONTEXT_TITLES, METRICS, show
from recpo.report.stats import Stat


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
