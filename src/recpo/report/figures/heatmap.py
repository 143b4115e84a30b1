"""The α × γ heatmap (paper Fig. 5): mean HitRatio@1 and rank HR@1 of one method at one
K over a grid of α and γ, with std and n in each cell."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from recpo.report.collect import Condition
from recpo.report.figures.panels import (
    Built,
    FigureFile,
    FigureInput,
    check_one_panel,
    describe_panel,
    panel_key,
    panel_title,
    save_png,
    suffixes,
)
from recpo.report.labels import METRICS, show
from recpo.report.stats import Stat


def alpha_gamma_heatmap(conds: list[Condition], split: str, path: Path) -> None:
    """Mean HitRatio@1 and rank HR@1 over the α × γ grid (std and n in each cell)."""
    check_one_panel(conds, "the α × γ heatmap")
    alphas = sorted({c.factors["alpha"] for c in conds})
    gammas = sorted({c.factors["gamma"] for c in conds})
    fig = Figure(figsize=(1.3 * len(gammas) * 2 + 3, 1.0 * len(alphas) + 2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("gen_hr@1", "hr@1"), strict=True):
        grid = np.full((len(alphas), len(gammas)), np.nan)
        stats: dict[tuple[int, int], Stat] = {}
        for cond in conds:
            i, j = alphas.index(cond.factors["alpha"]), gammas.index(cond.factors["gamma"])
            stats[i, j] = cond.stat(split, metric)
            grid[i, j] = stats[i, j].mean
        image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        # The colours stretch over the measured cells only: the label says how wide that is.
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        if np.isfinite(grid).any():
            lo, hi = np.nanmin(grid), np.nanmax(grid)
            bar.set_label(f"colour range {lo:.4f} – {hi:.4f} (width {hi - lo:.4f})", fontsize=7)
        for (i, j), s in stats.items():
            if s.n:
                spread = f"\n±{s.std:.3f}" if s.n > 1 else ""
                ax.text(
                    j,
                    i,
                    f"{s.mean:.3f}{spread}\nn={s.n}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w",
                )
        ax.set_xticks(range(len(gammas)), [show(g) for g in gammas])
        ax.set_yticks(range(len(alphas)), [show(a) for a in alphas])
        ax.set_xlabel("γ (intrinsic margin)")
        ax.set_ylabel("α (adjustment intensity)")
        ax.set_title(f"{split} {METRICS[metric]}", fontsize=9)
    fig.suptitle(
        f"{conds[0].method} α × γ · K = {show(conds[0].factors.get('num_negatives'))} · "
        + panel_title(conds[0], split),
        fontsize=9,
    )
    save_png(fig, path)


def _describe_grid(cond: Condition) -> list[tuple[str, str]]:
    k = show(cond.factors.get("num_negatives"))
    return [*describe_panel(cond), ("method", cond.method), ("K", k)]


def alpha_gamma_heatmaps(figures: FigureInput) -> Built:
    """One heatmap per method and K with two or more α and γ each."""
    grids: dict[str, list[Condition]] = defaultdict(list)
    for cond in figures.po:
        if cond.factors.get("alpha") is not None and cond.factors.get("gamma") is not None:
            grids[panel_key(cond, ("num_negatives",)) + cond.method].append(cond)
    grids = {
        key: conds
        for key, conds in grids.items()
        if len({c.factors["alpha"] for c in conds}) > 1
        and len({c.factors["gamma"] for c in conds}) > 1
    }
    skipped = []
    if not grids:
        alphas = sorted({c.factors["alpha"] for c in figures.po} - {None})
        gammas = sorted({c.factors["gamma"] for c in figures.po} - {None})
        skipped.append(
            "α × γ heatmap (Fig. 5) skipped: needs two or more values of both α and γ for one "
            f"method (found α: {', '.join(map(show, alphas)) or 'none'}; "
            f"γ: {', '.join(map(show, gammas)) or 'none'})"
        )
    files = []
    suffix = suffixes(grids, _describe_grid)
    for key, conds in grids.items():
        rep, split = conds[0], figures.split
        name = f"alpha_gamma{suffix[key]}.png"
        alpha_gamma_heatmap(conds, split, figures.out / name)
        title = f"α × γ ({rep.method}): {panel_title(rep, split)}"
        files.append(FigureFile(name, title, "alpha_gamma"))
    return files, skipped
