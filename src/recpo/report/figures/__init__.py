"""PNG figures (matplotlib, Agg canvas; no pyplot state), one module per kind: the
collapse curve (Fig. 4a), the training-log figures (Fig. 4b, Fig. 3, selected negatives)
and the α × γ heatmap (Fig. 5). A figure never mixes datasets, backbones or candidate
protocols: each gets its own panel (file); the plotting functions refuse conditions that
span several."""

from __future__ import annotations

from pathlib import Path

from recpo.report.collect import Condition
from recpo.report.figures.collapse import collapse_curves
from recpo.report.figures.heatmap import alpha_gamma_heatmaps
from recpo.report.figures.panels import FigureFile, FigureInput, colors_for
from recpo.report.figures.training import boundary_shares, selected_negatives, win_rates

# Every figure of a report, in the order report.md shows them; each builder returns the
# files it drew and one line per figure it skipped.
FIGURES = (collapse_curves, win_rates, boundary_shares, selected_negatives, alpha_gamma_heatmaps)


def make_figures(
    conditions: list[Condition], split: str, out: Path
) -> tuple[list[FigureFile], list[str]]:
    """Draw every figure the conditions support into ``out``; one line per figure skipped."""
    po = [c for c in conditions if c.part == "po"]
    if not po:
        return [], ["Figures skipped: no finished preference-optimization job (stages without po)"]
    sft = [c for c in conditions if c.part == "sft"]
    figures = FigureInput(po, sft, split, out, colors_for(po))
    files: list[FigureFile] = []
    skipped: list[str] = []
    for build in FIGURES:
        drawn, reasons = build(figures)
        files += drawn
        skipped += reasons
    return files, skipped


__all__ = ["FIGURES", "FigureFile", "make_figures"]
