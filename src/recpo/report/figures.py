"""PNG figures (matplotlib, Agg canvas; no pyplot state):

* the collapse curve (paper Fig. 4a): HitRatio@1 and rank HR@1 against the number of
  negatives K, one line per method, error bars = sample std over seeds;
* the reward win rate in 20% intervals of training (Fig. 4b);
* boundary-critical and model-discriminative shares in the early, middle and late
  third of training (Fig. 3);
* the α × γ heatmap (Fig. 5);
* negatives selected per example over training.

A figure never mixes datasets, backbones or candidate protocols: each gets its own
panel (file); the plotting functions refuse conditions that span several.
Training curves come from ``logs/po/metrics.csv``: each job's logged steps are split by
progress (step / (last step + 1)) into equal intervals, averaged per interval, then
averaged over the seeds.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recpo.report.collect import (
    CRITICAL,
    DISCRIMINATIVE,
    METRICS,
    SELECT_COUNT,
    WIN_RATE,
    Condition,
    ReportError,
    Stat,
    bin_stats,
    binned,
)
from recpo.report.tables import paired_stat, show

# Settings that define a panel: conditions in one figure share all of them (and the extras).
PANEL = ("dataset", "backbone", "tokenizer", "candidates", "stages")
MAX_SERIES = 12  # more settings than this in one panel make an unreadable figure


@dataclass
class FigureFile:
    name: str  # file name inside the report folder
    title: str
    kind: str  # collapse_curve | win_rate | boundary_shares | alpha_gamma | selected_negatives
    note: str = ""  # a caveat printed under the figure


def unequal_seeds(conds: list[Condition]) -> str:
    """A caveat when a curve's points average different seeds: a line whose K were not
    all run with the same seeds mixes seed effects into its shape."""
    lines = []
    for label, members in _series(conds).items():
        seeds = {c.factors["num_negatives"]: sorted(map(show, c.seeds)) for c in members}
        if len({tuple(v) for v in seeds.values()}) > 1:
            per_k = "; ".join(
                f"K={show(k)}: {', '.join(v)}"
                for k, v in sorted(seeds.items(), key=lambda kv: kv[0])
            )
            lines.append(f"{label} ({per_k})")
    if not lines:
        return ""
    return "Unequal seeds along a line, so its points average different seeds: " + " | ".join(lines)


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


def _panel_key(cond: Condition, extra: tuple[str, ...] = ()) -> str:
    f = cond.factors
    return json.dumps(
        [[f.get(n) for n in (*PANEL, *extra)], cond.extras], sort_keys=True, default=str
    )


def _panel_title(cond: Condition, split: str | None = None) -> str:
    f = cond.factors
    parts = [show(f.get("dataset")), show(f.get("backbone"))]
    if f.get("tokenizer") not in (None, "title"):
        parts.append(f"{show(f.get('tokenizer'))} tokenizer")
    parts.append(f"{show(f.get('candidates'))} candidates")
    parts += [f"{k}={show(v)}" for k, v in cond.extras.items()]
    if split:
        parts.append(f"{split} split")
    return " · ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def _describe(cond: Condition) -> list[tuple[str, str]]:
    out = [(n, show(cond.factors.get(n))) for n in PANEL]
    return out + [(k, show(v)) for k, v in cond.extras.items()]


def _describe_grid(cond: Condition) -> list[tuple[str, str]]:
    k = show(cond.factors.get("num_negatives"))
    return [*_describe(cond), ("method", cond.method), ("K", k)]


def _suffixes(panels: dict[str, list[Condition]], describe=_describe) -> dict[str, str]:
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
    suffixes = {}
    for key, d in described.items():
        parts = [
            d[i][1] if d[i][0] in (*PANEL, "method") else f"{d[i][0]}={d[i][1]}"
            for i in varying
            if i < len(d)
        ]
        suffixes[key] = "__" + _slug("-".join(parts))
    # Settings that slug to the same text still get distinct names.
    if len(set(suffixes.values())) < len(suffixes):
        suffixes = {key: f"{s}-{i}" for i, (key, s) in enumerate(sorted(suffixes.items()))}
    return suffixes


def _series(conds: list[Condition]) -> dict[str, list[Condition]]:
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
    for label in _series(conds):
        if label not in labels:
            labels.append(label)
    return {label: f"C{i % 10}" for i, label in enumerate(labels)}


def _color(colors: dict[str, str] | None, label: str, i: int) -> str:
    return (colors or {}).get(label, f"C{i % 10}")


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _yerr(stats: list[Stat]) -> np.ndarray:
    return np.array([0.0 if math.isnan(s.std) else s.std for s in stats])


# The collapse curve's title, plain or paired (each point minus its job's SFT model).
CURVE_TITLES = {False: "Collapse curve", True: "Collapse curve, minus each job's SFT model"}


def collapse_curve(
    conds: list[Condition],
    sft: list[Condition],
    split: str,
    path: Path,
    colors: dict[str, str] | None = None,
    paired: bool = False,
) -> None:
    """HitRatio@1 and rank HR@1 against K, one line per method run at two or more K;
    SFT as a dashed line. With ``paired``, each point is the method minus its own SFT
    model (:func:`paired_stat`), so the SFT models' seed spread leaves the error bars,
    and SFT is the zero line."""
    check_one_panel(conds + sft, "the collapse curve")
    conds = curve_members(conds)
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    series = _series(conds)
    ks = sorted({c.factors["num_negatives"] for c in conds})
    spacing = min((b - a for a, b in zip(ks, ks[1:], strict=False)), default=1)
    step = min(0.06, 0.4 / max(1, len(series))) * spacing
    for ax, metric in zip(axes, ("gen_hr@1", "hr@1"), strict=True):
        for i, (label, members) in enumerate(series.items()):
            members = sorted(members, key=lambda c: c.factors["num_negatives"])
            # Lines that coincide stay visible: each is shifted a little along K.
            dodge = (i - (len(series) - 1) / 2) * step
            x = [c.factors["num_negatives"] + dodge for c in members]
            if paired:
                stats = [paired_stat(c, split, metric) for c in members]
            else:
                stats = [c.stat(split, metric) for c in members]
            ax.errorbar(
                x,
                [s.mean for s in stats],
                yerr=_yerr(stats),
                marker="o",
                capsize=3,
                color=_color(colors, label, i),
                label=label,
            )
        if paired:
            ax.axhline(0.0, color="0.4", ls="--", lw=1, label="SFT (each job's own)")
        for j, cond in enumerate([] if paired else sft):
            stat = cond.stat(split, metric)
            if stat.n:
                extra = "" if len(sft) == 1 else f" {j + 1}"
                ax.axhline(stat.mean, color="0.4", ls="--", lw=1, label=f"SFT{extra} (n={stat.n})")
        ax.set_xticks(ks)
        ax.set_xlabel("negatives per example (K)")
        ax.set_ylabel(f"{split} {METRICS[metric]}" + (" − SFT" if paired else ""))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    kind = CURVE_TITLES[paired]
    fig.suptitle(f"{kind} · {_panel_title(conds[0], split)}", fontsize=10)
    _save(fig, path)


def curve_members(conds: list[Condition]) -> list[Condition]:
    """The conditions of the lines that were run at two or more numbers of negatives."""
    return [
        c
        for members in _series(conds).values()
        if len({m.factors["num_negatives"] for m in members}) > 1
        for c in members
    ]


def _facets(conds: list[Condition]) -> list:
    return sorted({c.factors.get("num_negatives") for c in conds}, key=lambda k: (k is None, k))


def _grid(n: int, width: float, height: float) -> tuple[Figure, list]:
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def win_rate_bars(
    conds: list[Condition], path: Path, colors: dict[str, str] | None = None, bins: int = 5
) -> None:
    """Mean reward win rate in each 20% interval of training (one subplot per K)."""
    check_one_panel(conds, "the reward win-rate figure")
    facets = _facets(conds)
    fig, axes = _grid(len(facets), 4.2, 3.4)
    edges = [round(100 * i / bins) for i in range(bins + 1)]
    names = [f"{a}–{b}%" for a, b in zip(edges, edges[1:], strict=False)]
    for ax, k in zip(axes, facets, strict=True):
        series = _series([c for c in conds if c.factors.get("num_negatives") == k])
        width = 0.8 / max(1, len(series))
        for i, (label, members) in enumerate(series.items()):
            stats = bin_stats([a for c in members for a in binned(c, WIN_RATE, bins)], bins)
            x = np.arange(bins) + (i - (len(series) - 1) / 2) * width
            ax.bar(
                x,
                [s.mean for s in stats],
                width,
                yerr=_yerr(stats),
                capsize=2,
                color=_color(colors, label, i),
                label=f"{label} (n={max(s.n for s in stats)})",
            )
        ax.set_xticks(range(bins), names, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"K = {show(k)}", fontsize=9)
        ax.set_ylabel("reward win rate")
        ax.set_xlabel("training progress")
        ax.legend(fontsize=7)
    fig.suptitle(f"Reward win rate · {_panel_title(conds[0])}", fontsize=10)
    _save(fig, path)


def boundary_bars(
    conds: list[Condition], path: Path, colors: dict[str, str] | None = None, bins: int = 3
) -> None:
    """Boundary-critical (solid) and model-discriminative (light) shares of the negatives
    in the early, middle and late third of training, stacked per method."""
    check_one_panel(conds, "the boundary-share figure")
    facets = _facets(conds)
    fig, axes = _grid(len(facets), 4.6, 3.6)
    for ax, k in zip(axes, facets, strict=True):
        series = _series([c for c in conds if c.factors.get("num_negatives") == k])
        width = 0.8 / max(1, len(series))
        for i, (label, members) in enumerate(series.items()):
            crit = bin_stats([a for c in members for a in binned(c, CRITICAL, bins)], bins)
            disc = bin_stats([a for c in members for a in binned(c, DISCRIMINATIVE, bins)], bins)
            x = np.arange(bins) + (i - (len(series) - 1) / 2) * width
            low = np.nan_to_num([s.mean for s in crit])
            color = _color(colors, label, i)
            ax.bar(x, low, width, yerr=_yerr(crit), capsize=2, color=color, label=label)
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
        + _panel_title(conds[0]),
        fontsize=9,
    )
    _save(fig, path)


def selected_lines(
    conds: list[Condition], path: Path, colors: dict[str, str] | None = None, bins: int = 10
) -> None:
    """Negatives selected per example over training, ± std over seeds (shaded)."""
    check_one_panel(conds, "the selected-negatives figure")
    facets = _facets(conds)
    fig, axes = _grid(len(facets), 4.4, 3.4)
    centers = 100 * (np.arange(bins) + 0.5) / bins
    for ax, k in zip(axes, facets, strict=True):
        series = _series([c for c in conds if c.factors.get("num_negatives") == k])
        for i, (label, members) in enumerate(series.items()):
            per_seed = [a for c in members for a in binned(c, SELECT_COUNT, bins)]
            if not per_seed:
                continue
            stats = bin_stats(per_seed, bins)
            whole = Stat.of([float(np.nanmean(a)) for a in per_seed])
            mean = np.array([s.mean for s in stats])
            err = _yerr(stats)
            color = _color(colors, label, i)
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
    fig.suptitle(f"Selected negatives · {_panel_title(conds[0])}", fontsize=10)
    _save(fig, path)


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
        + _panel_title(conds[0], split),
        fontsize=9,
    )
    _save(fig, path)


def _has_curve(cond: Condition, column: str) -> bool:
    return any(e.job.curve("po", column) is not None for e in cond.entries)


def make_figures(
    conditions: list[Condition], split: str, out: Path
) -> tuple[list[FigureFile], list[str]]:
    """Draw every figure the conditions support into ``out``; one line per figure skipped."""
    po = [c for c in conditions if c.stage == "po"]
    sft = [c for c in conditions if c.stage == "sft"]
    colors = colors_for(po)
    files: list[FigureFile] = []
    skipped: list[str] = []
    if not po:
        return files, [
            "Figures skipped: no finished preference-optimization job (stages without po)"
        ]

    # Fig. 4a: panels by dataset/backbone/...; lines need two or more K.
    panels: dict[str, list[Condition]] = defaultdict(list)
    for cond in po:
        panels[_panel_key(cond)].append(cond)
    curves = {key: curve_members(conds) for key, conds in panels.items()}
    curves = {key: conds for key, conds in curves.items() if conds}
    if not curves:
        ks = sorted({show(c.factors["num_negatives"]) for c in po}, key=lambda v: float(v))
        skipped.append(
            "Collapse curve (Fig. 4a) skipped: no method was run at two or more numbers of "
            f"negatives (K = {', '.join(ks)})"
        )
    suffix = _suffixes(curves)
    for key, conds in curves.items():
        series = _series(conds)
        if len(series) > MAX_SERIES:
            skipped.append(
                f"Collapse curve for {_panel_title(conds[0])} skipped: {len(series)} lines "
                f"(at most {MAX_SERIES})"
            )
            continue
        basics = [
            conds[0].factors.get(n) for n in ("dataset", "backbone", "tokenizer", "candidates")
        ]
        ref = [
            c
            for c in sft
            if [c.factors.get(n) for n in ("dataset", "backbone", "tokenizer", "candidates")]
            == basics
        ]
        for paired, stem in ((False, "collapse_curve"), (True, "collapse_curve_paired")):
            title = CURVE_TITLES[paired]
            name = f"{stem}{suffix[key]}.png"
            collapse_curve(conds, ref, split, out / name, colors, paired=paired)
            files.append(
                FigureFile(
                    name,
                    f"{title}: {_panel_title(conds[0], split)}",
                    "collapse_curve",
                    note=unequal_seeds(conds),
                )
            )

    # Training curves: panels as above, one subplot per K.
    for column, kind, title, draw, why in (
        (WIN_RATE, "win_rate", "Reward win rate in 20% intervals (Fig. 4b)", win_rate_bars, ""),
        (
            CRITICAL,
            "boundary_shares",
            "Boundary-critical / model-discriminative shares by training stage (Fig. 3)",
            boundary_bars,
            "",
        ),
        (
            SELECT_COUNT,
            "selected_negatives",
            "Negatives selected per example over training",
            selected_lines,
            " (only DynamicPO and Top-K select negatives)",
        ),
    ):
        logged = {key: [c for c in conds if _has_curve(c, column)] for key, conds in panels.items()}
        logged = {key: conds for key, conds in logged.items() if conds}
        if not logged:
            skipped.append(
                f"{title} skipped: no finished preference job logged {column} in "
                f"logs/po/metrics.csv{why}"
            )
            continue
        suffix = _suffixes(logged)
        for key, conds in logged.items():
            per_facet = max(
                len(_series([c for c in conds if c.factors.get("num_negatives") == k]))
                for k in _facets(conds)
            )
            if per_facet > MAX_SERIES:
                skipped.append(
                    f"{title} for {_panel_title(conds[0])} skipped: {per_facet} settings in one "
                    f"subplot (at most {MAX_SERIES})"
                )
                continue
            name = f"{kind}{suffix[key]}.png"
            draw(conds, out / name, colors)
            files.append(FigureFile(name, f"{title}: {_panel_title(conds[0])}", kind))

    # Fig. 5: one heatmap per method and K with two or more α and γ each.
    grids: dict[str, list[Condition]] = defaultdict(list)
    for cond in po:
        if cond.factors.get("alpha") is not None and cond.factors.get("gamma") is not None:
            grids[_panel_key(cond, ("num_negatives",)) + cond.method].append(cond)
    grids = {
        key: conds
        for key, conds in grids.items()
        if len({c.factors["alpha"] for c in conds}) > 1
        and len({c.factors["gamma"] for c in conds}) > 1
    }
    if not grids:
        alphas = sorted({c.factors["alpha"] for c in po} - {None})
        gammas = sorted({c.factors["gamma"] for c in po} - {None})
        skipped.append(
            "α × γ heatmap (Fig. 5) skipped: needs two or more values of both α and γ for one "
            f"method (found α: {', '.join(map(show, alphas)) or 'none'}; "
            f"γ: {', '.join(map(show, gammas)) or 'none'})"
        )
    suffix = _suffixes(grids, _describe_grid)
    for key, conds in grids.items():
        rep = conds[0]
        name = f"alpha_gamma{suffix[key]}.png"
        alpha_gamma_heatmap(conds, split, out / name)
        files.append(
            FigureFile(name, f"α × γ ({rep.method}): {_panel_title(rep, split)}", "alpha_gamma")
        )
    return files, skipped
