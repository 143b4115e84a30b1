"""The results a finished job holds: its preference-optimization stage (``po:`` keys),
its SFT stage (``sft:`` keys) or a traditional baseline, each an :class:`Entry` with the
settings it depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recpo.errors import ReportError
from recpo.objectives.losses import Objective
from recpo.report.jobs import FACTORS, Job, read_factor, under, untrained
from recpo.report.methods import method_label, objective_class

# Factors a job of the LLM pipeline with a preference stage must set.
_PO_FACTORS = ("backbone", "num_negatives", "objective")
# The settings an SFT result depends on (its content key covers the same ground): the
# PO-only keys below are dropped from these subtrees.
_SFT_SUBTREES = ("data", "backbone", "sft", "eval", "scoring", "trainer", "task")
_NOT_SFT = ("data.resample_negatives", "backbone.po_lr", *FACTORS["num_negatives"].paths)
_BASELINE_SUBTREES = ("data", "baseline", "trainer", "task", "eval")


@dataclass
class Entry:
    """One result of one job at one seed. ``part``: which result of the job it is, its
    ``po`` or ``sft`` stage or a ``baseline``; ``objective``: the class of a ``po``
    result's objective (None otherwise)."""

    job: Job
    part: str
    method: str
    factors: dict[str, Any]
    settings: dict[str, Any]
    metrics: dict[str, float]
    objective: type[Objective] | None = None

    @property
    def seed(self) -> Any:
        return self.factors["seed"]


def _part_metrics(results: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in results.items():
        if key.startswith(prefix) and isinstance(value, int | float):
            out[key[len(prefix) :]] = float(value)
    return out


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1]


def job_entries(job: Job) -> list[Entry]:
    """The results a finished job holds, each with the settings it depends on."""
    cfg, src = job.config, job.path / "config.yaml"
    factors = {name: read_factor(cfg, name, src) for name in ("dataset", "seed", "task")}
    for name in ("tokenizer", "candidates", "stages", "baseline"):
        factors[name] = read_factor(cfg, name, src)
    if "baselines" in str(factors["task"]):
        metrics = _part_metrics(job.results, "")
        # A traditional model ranks the candidates: its HitRatio@1 is its ranking HR@1 and
        # every answer is a valid candidate.
        for split in {k.split("/", 1)[0] for k in metrics if "/" in k}:
            if f"{split}/hr@1" in metrics:
                metrics.setdefault(f"{split}/gen_hr@1", metrics[f"{split}/hr@1"])
                metrics.setdefault(f"{split}/valid_ratio", 1.0)
        name = (
            _short(factors["baseline"]).removesuffix("_scores")
            if factors["baseline"]
            else "baseline"
        )
        settings = {k: v for k, v in job.settings.items() if under(k, _BASELINE_SUBTREES)}
        base = {**factors, "backbone": None, "tokenizer": None, "stages": None}
        return [Entry(job, "baseline", name, base, settings, metrics)]

    stages = factors["stages"] or ()
    if not {"sft", "po"} & set(stages):
        raise ReportError(
            f"{src}: stages is {list(stages)}; expected a list holding sft and/or po "
            "(the LLM pipeline's stages, needed by the report)"
        )
    factors["backbone"] = read_factor(cfg, "backbone", src)
    entries = []
    if "sft" in stages:
        sft_settings = {
            k: v
            for k, v in job.settings.items()
            if under(k, _SFT_SUBTREES) and not under(k, _NOT_SFT)
        }
        sft_factors = {**factors, "stages": None}
        metrics = _part_metrics(job.results, "sft:")
        label = "zero-shot" if untrained(cfg) else "SFT"
        entries.append(Entry(job, "sft", label, sft_factors, sft_settings, metrics))
    if "po" in stages:
        po_factors = dict(factors)
        for name in _PO_FACTORS:
            po_factors[name] = read_factor(cfg, name, src)
        for name in ("stage1", "stage2", "dynamic_beta", "alpha", "gamma", "k"):
            po_factors[name] = read_factor(cfg, name, src)
        if po_factors["dynamic_beta"] is False:
            # α and γ only shape the dynamic β; without it they change nothing.
            po_factors["alpha"] = po_factors["gamma"] = None
        metrics = _part_metrics(job.results, "po:")
        objective = objective_class(str(po_factors["objective"]), src)
        label = method_label(objective, str(po_factors["objective"]), po_factors, cfg)
        entries.append(Entry(job, "po", label, po_factors, dict(job.settings), metrics, objective))
    return entries
