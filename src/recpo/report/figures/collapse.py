"""The collapse curve (paper Fig. 4a): HitRatio@1 and rank HR@1 against the number of
negatives K, one line per method run at two or more K, error bars = sample std over
seeds; plain, and paired (each point minus its job's own SFT model)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from recpo.report.collect import Condition
from recpo.report.figures.panels import (
    MAX_SERIES,
    Built,
    FigureFile,
    FigureInput,
    check_one_panel,
    color_of,
    error_bars,
    panel_title,
    save_png,
    series_of,
    suffixes,
)
from recpo.report.labels import METRICS, show
from recpo.report.references import paired_stat


def unequal_seeds(conds: list[Condition]) -> str:
    """A caveat when a curve's points average different seeds: a line whose K were not
    all run with the same seeds mixes seed effects into its shape."""
    lines = []
    for label, members in series_of(conds).items():
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
    series = series_of(conds)
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
                yerr=error_bars(stats),
                marker="o",
                capsize=3,
                color=color_of(colors, label, i),
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
    fig.suptitle(f"{kind} · {panel_title(conds[0], split)}", fontsize=10)
    save_png(fig, path)


def curve_members(conds: list[Condition]) -> list[Condition]:
    """The conditions of the lines that were run at two or more numbers of negatives."""
    return [
        c
        for members in series_of(conds).values()
        if len({m.factors["num_negatives"] for m in members}) > 1
        for c in members
    ]


# The SFT results a panel's dashed lines come from: the same dataset, backbone, tokenizer
# and candidate protocol.
SFT_MATCH = ("dataset", "backbone", "tokenizer", "candidates")


def collapse_curves(figures: FigureInput) -> Built:
    """One plain and one paired collapse curve per panel whose lines were run at two or
    more numbers of negatives."""
    files: list[FigureFile] = []
    skipped: list[str] = []
    curves = {key: curve_members(conds) for key, conds in figures.panels().items()}
    curves = {key: conds for key, conds in curves.items() if conds}
    if not curves:
        po = figures.po
        ks = sorted({show(c.factors["num_negatives"]) for c in po}, key=lambda v: float(v))
        skipped.append(
            "Collapse curve (Fig. 4a) skipped: no method was run at two or more numbers of "
            f"negatives (K = {', '.join(ks)})"
        )
    suffix = suffixes(curves)
    for key, conds in curves.items():
        series = series_of(conds)
        if len(series) > MAX_SERIES:
            skipped.append(
                f"Collapse curve for {panel_title(conds[0])} skipped: {len(series)} lines "
                f"(at most {MAX_SERIES})"
            )
            continue
        basics = [conds[0].factors.get(n) for n in SFT_MATCH]
        ref = [c for c in figures.sft if [c.factors.get(n) for n in SFT_MATCH] == basics]
        for paired, stem in ((False, "collapse_curve"), (True, "collapse_curve_paired")):
            title = CURVE_TITLES[paired]
            name = f"{stem}{suffix[key]}.png"
            path = figures.out / name
            collapse_curve(conds, ref, figures.split, path, figures.colors, paired=paired)
            files.append(
                FigureFile(
                    name,
                    f"{title}: {panel_title(conds[0], figures.split)}",
                    "collapse_curve",
                    note=unequal_seeds(conds),
                )
            )
    return files, skipped
