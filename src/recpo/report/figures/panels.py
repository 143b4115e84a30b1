"""What the figures share: panels (one dataset, backbone, tokenizer and candidate
protocol per file), their titles and file names, the lines of a panel and their colours."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recpo.errors import ReportError
from recpo.report.collect import Condition
from recpo.report.labels import show
from recpo.report.stats import Stat

# Settings that define a panel: conditions in one figure share all of them (and the extras).
PANEL = ("dataset", "backbone", "tokenizer", "candidates", "stages")
MAX_SERIES = 12  # more settings than this in one panel make an unreadable figure


@dataclass
class FigureFile:
    name: str  # file name inside the report folder
    title: str
    kind: str  # collapse_curve | win_rate | boundary_shares | alpha_gamma | selected_negatives
    note: str = ""  # a caveat printed under the figure


@dataclass
class FigureInput:
    """What every figure builder draws from: the preference and SFT conditions, the
    split, the report's scratch folder and one colour per line label."""

    po: list[Condition]
    sft: list[Condition]
    split: str
    out: Path
    colors: dict[str, str]

    def panels(self, extra: tuple[str, ...] = ()) -> dict[str, list[Condition]]:
        """The preference conditions by panel (and by the ``extra`` settings)."""
        out: dict[str, list[Condition]] = defaultdict(list)
        for cond in self.po:
            out[panel_key(cond, extra)].append(cond)
        return dict(out)


# What a builder returns: the files it drew and one line per figure it skipped.
Built = tuple[list[FigureFile], list[str]]


def check_one_panel(conditions: list[Condition], what: str) -> None:
    """Refuse to draw ``what`` over conditions of several datasets, backbones or
    candidate protocols."""
    for name, plural in (
        ("dataset", "datasets"),
        ("backbone", "backbones"),
        ("tokenizer", "tokenizers"),
        ("candidates", "candidate protocols"),
    ):
        values = sorted({show(c.factors.get(name)) for c in conditions} - {"–"})
        if len(values) > 1:
            raise ReportError(
                f"{what} would mix {plural} ({', '.join(values)}); draw one figure per {name}"
            )


def panel_key(cond: Condition, extra: tuple[str, ...] = ()) -> str:
    f = cond.factors
    return json.dumps(
        [[f.get(n) for n in (*PANEL, *extra)], cond.extras], sort_keys=True, default=str
    )


def panel_title(cond: Condition, split: str | None = None) -> str:
    f = cond.factors
    parts = [show(f.get("dataset")), show(f.get("backbone"))]
    if f.get("tokenizer") not in (None, "title"):
        parts.append(f"{show(f.get('tokenizer'))} tokenizer")
    parts.append(f"{show(f.get('candidates'))} candidates")
    parts += [f"{k}={show(v)}" for k, v in cond.extras.items()]
    if split:
        parts.append(f"{split} split")
    return " · ".join(parts)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def describe_panel(cond: Condition) -> list[tuple[str, str]]:
    out = [(n, show(cond.factors.get(n))) for n in PANEL]
    return out + [(k, show(v)) for k, v in cond.extras.items()]


def suffixes(panels: dict[str, list[Condition]], describe=describe_panel) -> dict[str, str]:
    """File-name suffix of each panel: the settings that differ between panels."""
    if len(panels) <= 1:
        return {key: "" for key in panels}
    described = {key: describe(conds[0]) for key, conds in panels.items()}
    width = max(len(d) for d in described.values())
    varying = [
        i
        for i in range(width)
        if len({d[i][1] if i < len(d) else "" for d in described.values()}) > 1
    ]
    out = {}
    for key, d in described.items():
        parts = [
            d[i][1] if d[i][0] in (*PANEL, "method") else f"{d[i][0]}={d[i][1]}"
            for i in varying
            if i < len(d)
        ]
        out[key] = "__" + slug("-".join(parts))
    # Settings that slug to the same text still get distinct names.
    if len(set(out.values())) < len(out):
        out = {key: f"{s}-{i}" for i, (key, s) in enumerate(sorted(out.items()))}
    return out


def series_of(conds: list[Condition]) -> dict[str, list[Condition]]:
    """Conditions grouped into lines: the method, with α / γ when they vary."""
    shown = [n for n in ("alpha", "gamma") if len({c.factors.get(n) for c in conds} - {None}) > 1]
    symbols = {"alpha": "α", "gamma": "γ"}
    out: dict[str, list[Condition]] = defaultdict(list)
    for cond in conds:
        label = cond.method
        values = [f"{symbols[n]}={show(cond.factors.get(n))}" for n in shown]
        values = [v for v in values if not v.endswith("=–")]
        if values:
            label += " (" + ", ".join(values) + ")"
        out[label].append(cond)
    return dict(out)


def colors_for(conds: list[Condition]) -> dict[str, str]:
    """One colour per line label, the same in every figure of a report."""
    labels: list[str] = []
    for label in series_of(conds):
        if label not in labels:
            labels.append(label)
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


def color_of(colors: dict[str, str] | None, label: str, i: int) -> str:
    return (colors or {}).get(label, f"C{i % 10}")


def save_png(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def error_bars(stats: list[Stat]) -> np.ndarray:
    return np.array([0.0 if math.isnan(s.std) else s.std for s in stats])


def per_k(conds: list[Condition]) -> list[tuple[Any, dict[str, list[Condition]]]]:
    """Each number of negatives K among the conditions (unset last) with its lines."""
    ks = sorted({c.factors.get("num_negatives") for c in conds}, key=lambda k: (k is None, k))
    return [(k, series_of([c for c in conds if c.factors.get("num_negatives") == k])) for k in ks]


def subplots_per_k(
    conds: list[Condition], what: str, width: float, height: float
) -> tuple[Figure, list[tuple[Any, Any, dict[str, list[Condition]]]]]:
    """A figure of ``what`` with one subplot per K, four to a row: the figure and, per
    subplot, its axes, K and lines. Refuses conditions of several panels."""
    check_one_panel(conds, what)
    facets = per_k(conds)
    n = len(facets)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, [(ax, k, series) for ax, (k, series) in zip(axes[:n], facets, strict=True)]
