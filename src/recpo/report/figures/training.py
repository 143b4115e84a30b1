"""Figures of the preference stage's training log, one subplot per K: the reward win
rate in 20% intervals of training (paper Fig. 4b), boundary-critical and
model-discriminative shares in the early, middle and late third (Fig. 3), and the
negatives selected per example over training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recpo.report.collect import Condition
from recpo.report.curves import CRITICAL, DISCRIMINATIVE, SELECT_COUNT, WIN_RATE, bin_stats, binned
from recpo.report.figures.panels import (
    MAX_SERIES,
    Built,
    FigureFile,
    FigureInput,
    color_of,
    error_bars,
    panel_title,
    per_k,
    save_png,
    subplots_per_k,
    suffixes,
)
from recpo.report.labels import show
from recpo.report.stats import Stat


def win_rate_bars(
    conds: list[Condition], path: Path, colors: dict[str, str] | None = None, bins: int = 5
) -> None:
    """Mean reward win rate in each 20% interval of training (one subplot per K)."""
    fig, subplots = subplots_per_k(conds, "the reward win-rate figure", 4.2, 3.4)
    edges = [round(100 * i / bins) for i in range(bins + 1)]
    names = [f"{a}–{b}%" for a, b in zip(edges, edges[1:], strict=False)]
    for ax, k, series in subplots:
        width = 0.8 / max(1, len(series))
        for i, (label, members) in enumerate(series.items()):
            stats = bin_stats([a for c in members for a in binned(c, WIN_RATE, bins)], bins)
            x = np.arange(bins) + (i - (len(series) - 1) / 2) * width
            ax.bar(
                x,
                [s.mean for s in stats],
                width,
                yerr=error_bars(stats),
                capsize=2,
                color=color_of(colors, label, i),
                label=f"{label} (n={max(s.n for s in stats)})",
            )
        ax.set_xticks(range(bins), names, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"K = {show(k)}", fontsize=9)
        ax.set_ylabel("reward win rate")
        ax.set_xlabel("training progress")
        ax.legend(fontsize=7)
    fig.suptitle(f"Reward win rate · {panel_title(conds[0])}", fontsize=10)
    save_png(fig, path)


def boundary_bars(
    conds: list[Condition], path: Path, colors: dict[str, str] | None = None, bins: int = 3
) -> None:
    """Boundary-critical (solid) and model-discriminative (light) shares of the negatives
    in the early, middle and late third of training, stacked per method."""
    fig, subplots = subplots_per_k(conds, "the boundary-share figure", 4.6, 3.6)
    for ax, k, series in subplots:
        width = 0.8 / max(1, len(series))
        for i, (label, members) in enumerate(series.items()):
            crit = bin_stats([a for c in members for a in binned(c, CRITICAL, bins)], bins)
            disc = bin_stats([a for c in members for a in binned(c, DISCRIMINATIVE, bins)], bins)
            x = np.arange(bins) + (i - (len(series) - 1) / 2) * width
            low = np.nan_to_num([s.mean for s in crit])
            color = color_of(colors, label, i)
            ax.bar(x, low, width, yerr=error_bars(crit), capsize=2, color=color, label=label)
            ax.bar(
                x,
                np.nan_to_num([s.mean for s in disc]),
                width,
                bottom=low,
                color=color,
                alpha=0.3,
            )
            for xi, s in zip(x, crit, strict=True):
                if s.n:
                    ax.text(xi, 1.01, f"{100 * s.mean:.1f}%", ha="center", fontsize=7)
        ax.set_xticks(range(bins), ["early", "middle", "late"][:bins] if bins == 3 else None)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"K = {show(k)}", fontsize=9)
        ax.set_ylabel("share of negatives")
        ax.legend(fontsize=7, loc="center right")
    fig.suptitle(
        "Boundary-critical (solid, % on top) and model-discriminative (light) negatives · "
        + panel_title(conds[0]),
        fontsize=9,
    )
    save_png(fig, path)


def selected_lines(
    conds: list[Condition], path: Path, colors: dict[str, str] | None = None, bins: int = 10
) -> None:
    """Negatives selected per example over training, ± std over seeds (shaded)."""
    fig, subplots = subplots_per_k(conds, "the selected-negatives figure", 4.4, 3.4)
    centers = 100 * (np.arange(bins) + 0.5) / bins
    for ax, k, series in subplots:
        for i, (label, members) in enumerate(series.items()):
            per_seed = [a for c in members for a in binned(c, SELECT_COUNT, bins)]
            if not per_seed:
                continue
            stats = bin_stats(per_seed, bins)
            whole = Stat.of([float(np.nanmean(a)) for a in per_seed])
            mean = np.array([s.mean for s in stats])
            err = error_bars(stats)
            color = color_of(colors, label, i)
            spread = f" ± {whole.std:.2f}" if whole.n > 1 else ""
            ax.plot(
                centers,
                mean,
                marker="o",
                color=color,
                label=f"{label}: mean {whole.mean:.2f}{spread} (n={whole.n})",
            )
            ax.fill_between(centers, mean - err, mean + err, color=color, alpha=0.2)
        if k is not None:
            ax.axhline(k, color="0.5", ls=":", lw=1)
        ax.set_ylim(bottom=0)
        ax.set_title(f"K = {show(k)} (dotted)", fontsize=9)
        ax.set_xlabel("training progress (%)")
        ax.set_ylabel("negatives selected per example")
        ax.legend(fontsize=7)
    fig.suptitle(f"Selected negatives · {panel_title(conds[0])}", fontsize=10)
    save_png(fig, path)


def has_curve(cond: Condition, column: str) -> bool:
    return any(e.job.curve("po", column) is not None for e in cond.entries)


@dataclass(frozen=True)
class TrainingFigure:
    """A figure builder: ``draw`` over each panel whose jobs logged ``column``."""

    column: str
    kind: str
    title: str
    draw: Callable[[list[Condition], Path, dict[str, str] | None], None]
    why: str = ""  # why a study may lack the column

    def __call__(self, figures: FigureInput) -> Built:
        files: list[FigureFile] = []
        skipped: list[str] = []
        panels = figures.panels().items()
        logged = {key: [c for c in conds if has_curve(c, self.column)] for key, conds in panels}
        logged = {key: conds for key, conds in logged.items() if conds}
        if not logged:
            skipped.append(
                f"{self.title} skipped: no finished preference job logged {self.column} in "
                f"logs/po/metrics.csv{self.why}"
            )
            return files, skipped
        suffix = suffixes(logged)
        for key, conds in logged.items():
            per_facet = max(len(series) for _, series in per_k(conds))
            if per_facet > MAX_SERIES:
                skipped.append(
                    f"{self.title} for {panel_title(conds[0])} skipped: {per_facet} settings "
                    f"in one subplot (at most {MAX_SERIES})"
                )
                continue
            name = f"{self.kind}{suffix[key]}.png"
            self.draw(conds, figures.out / name, figures.colors)
            files.append(FigureFile(name, f"{self.title}: {panel_title(conds[0])}", self.kind))
        return files, skipped


win_rates = TrainingFigure(
    WIN_RATE, "win_rate", "Reward win rate in 20% intervals (Fig. 4b)", win_rate_bars
)
boundary_shares = TrainingFigure(
    CRITICAL,
    "boundary_shares",
    "Boundary-critical / model-discriminative shares by training stage (Fig. 3)",
    boundary_bars,
)
selected_negatives = TrainingFigure(
    SELECT_COUNT,
    "selected_negatives",
    "Negatives selected per example over training",
    selected_lines,
    " (only DynamicPO and Top-K select negatives)",
)
