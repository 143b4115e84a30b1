"""How the report names what it shows, besides the objectives (each objective class
carries its own label and order, :class:`recpo.objectives.Objective`): metrics, the
settings that tell results apart, DynamicPO's ablation switches, and cell text."""

from __future__ import annotations

import json
from collections.abc import Collection

# The evaluation metrics of every table: results.json key (after ``<split>/``) -> title.
METRICS = {
    "gen_hr@1": "HitRatio@1",
    "valid_ratio": "ValidRatio",
    "hr@1": "rank HR@1",
    "hr@5": "rank HR@5",
    "ndcg@5": "rank NDCG@5",
}

# Context: settings besides the method that tell conditions apart in tables and figures,
# each with its column title.
CONTEXT_TITLES = {
    "backbone": "backbone",
    "tokenizer": "tokenizer",
    "candidates": "candidates",
    "stages": "stages",
    "num_negatives": "K",
    "alpha": "α",
    "gamma": "γ",
}
CONTEXT = tuple(CONTEXT_TITLES)

# DynamicPO's switches as the paper's Table 6 names them (the stages of its boundary
# selection, its per-negative β), and Table 6's rows in order: which of them are off.
STAGE_NUMERALS = {"stage1": "I", "stage2": "II"}
SWITCH_NAMES = {"stage1": "Stage (I)", "stage2": "Stage (II)", "dynamic_beta": "dynamic β"}
ABLATIONS = (
    ("full",),
    ("stage1",),
    ("stage2",),
    ("stage1", "stage2"),
    ("dynamic_beta",),
)


def switch_text(off: Collection[str], on: Collection[str]) -> str:
    """What a method's label adds for switches turned off (`` w/o Stage (I & II) &
    dynamic β``) and turned on against the objective's defaults (`` + dynamic β``)."""
    stages = [numeral for key, numeral in STAGE_NUMERALS.items() if key in off]
    missing = ["Stage (" + " & ".join(stages) + ")"] if stages else []
    missing += [
        SWITCH_NAMES[key] for key in SWITCH_NAMES if key in off and key not in STAGE_NUMERALS
    ]
    text = (" w/o " + " & ".join(missing)) if missing else ""
    return text + "".join(f" + {SWITCH_NAMES[key]}" for key in SWITCH_NAMES if key in on)


def ablation_rank(off: Collection[str]) -> int:
    """The place of a DynamicPO ablation in Table 6's order (the full method first)."""
    key = tuple(s for s in SWITCH_NAMES if s in off) or ("full",)
    return ABLATIONS.index(key) if key in ABLATIONS else len(ABLATIONS) + len(key)


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
