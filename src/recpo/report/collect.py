"""Read the finished jobs under a folder and group them into settings.

A *job* is a run folder: ``config.yaml`` (the whole Hydra config, unresolved),
``results.json`` once it finished (absent: unfinished, counted and named, never
guessed) and ``logs/<stage>/metrics.csv`` (Lightning's CSV logger).

Each finished job yields *entries*, one per result it holds: its preference-optimization
stage (``po:`` keys), its SFT stage (``sft:`` keys; jobs sharing one SFT model yield it
once per seed) or a traditional baseline. Entries that differ only in the seed form one
*condition*; tables and figures report each condition as mean ± std over its seeds.

What varies is read through :data:`FACTORS`, the one place that knows where a setting
lives in the config.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from recpo import metric_names as names


class ReportError(Exception):
    """Bad input for the report: one line naming the file or setting and what was expected."""


_REQUIRED = object()
_ABSENT = object()


@dataclass(frozen=True)
class Factor:
    """Where a setting lives: candidate config paths (the first one set wins) and its
    value when none is set (``_REQUIRED``: the job's config must set one)."""

    paths: tuple[str, ...]
    default: Any = _REQUIRED
    what: str = ""


# What varies across jobs: name -> where each job's config.yaml holds it. When the config
# layout moves, update the paths here (new location first, old ones after, so reports of
# older sweeps keep working).
FACTORS: dict[str, Factor] = {
    "dataset": Factor(("data.source.name",), what="the dataset"),
    "backbone": Factor(("backbone.name", "backbone.kind"), what="the backbone"),
    "tokenizer": Factor(("backbone.tokenizer",), None),
    "candidates": Factor(("data.candidates",), "published"),
    "num_negatives": Factor(
        ("po.num_negatives", "data.num_negatives"), what="the number of negatives"
    ),
    "objective": Factor(("objective._target_",), what="the objective"),
    "stage1": Factor(("objective.stage1",), None),
    "stage2": Factor(("objective.stage2",), None),
    "dynamic_beta": Factor(("objective.dynamic_beta",), None),
    "alpha": Factor(("objective.alpha",), None),
    "gamma": Factor(("objective.gamma",), None),
    "k": Factor(("objective.k",), None),
    # The PO stage's seed when set apart from the run seed (PO seeds over one SFT model).
    "seed": Factor(("po.seed", "seed"), what="the seed"),
    "stages": Factor(("stages",), None),
    "task": Factor(("task._target_",), None),
    # A trained baseline's model, or a model-free baseline's scorer (the list oracle).
    "baseline": Factor(("baseline.model._target_", "baseline.scorer._target_"), None),
}
# The objective's config name (conf/objective/NAME.yaml) from its ``_target_``, whether the
# target is the function (recpo.objectives.plugin.dynamicpo_sdpo) or the class
# (recpo.objectives.plugin.DynamicPOSDPO): lower case, without separators.
OBJECTIVE_NAMES = {
    "dpo": "dpo",
    "dmpo": "dmpo",
    "sdpo": "sdpo",
    "mppo": "mppo",
    "dynamicpo": "dynamicpo",
    "dynamicposdpo": "dynamicpo_sdpo",
    "dynamicpomppo": "dynamicpo_mppo",
    "topk": "topk",
    "betadpo": "beta_dpo",
}
# Factors a job of the LLM pipeline with a preference stage must set.
_PO_FACTORS = ("backbone", "num_negatives", "objective")

# Config subtrees and keys that never change a result (where files go, how progress is
# shown, the run's name): two jobs that differ only here are the same setting.
IGNORED = (
    "paths",
    "logger",
    "callbacks",
    "hydra",
    "runtime",
    "optimized_metric",
    "task_name",
    "seed",
    "po.seed",
    "sft.reuse",
    "po.save_model",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
)
# The settings an SFT result depends on (its content key covers the same ground): the
# PO-only keys below are dropped from these subtrees.
_SFT_SUBTREES = ("data", "backbone", "sft", "eval", "scoring", "trainer", "task")
_NOT_SFT = ("data.resample_negatives", "backbone.po_lr", *FACTORS["num_negatives"].paths)
_BASELINE_SUBTREES = ("data", "baseline", "trainer", "task", "eval")

# Context: settings besides the method that tell conditions apart in tables and figures.
CONTEXT = ("backbone", "tokenizer", "candidates", "stages", "num_negatives", "alpha", "gamma")

# Training-log columns (logs/po/metrics.csv) the report reads.
WIN_RATE = names.train_key(names.REWARD_WIN_RATE)
CRITICAL = names.train_key(names.CRITICAL_SHARE)
DISCRIMINATIVE = names.train_key(names.DISCRIMINATIVE_SHARE)
SELECT_COUNT = names.train_key(names.SELECT_COUNT)
BETA = names.train_key(names.BETA_MEAN)

METRICS = {
    "gen_hr@1": "HitRatio@1",
    "valid_ratio": "ValidRatio",
    "hr@1": "rank HR@1",
    "hr@5": "rank HR@5",
    "ndcg@5": "rank NDCG@5",
}

_BASES = {"dpo": "DPO", "dmpo": "DMPO", "sdpo": "S-DPO", "mppo": "MPPO"}
# DynamicPO plug-in objective -> the multi-negative objective it extends.
PLUGINS = {"dynamicpo": "dmpo", "dynamicpo_sdpo": "sdpo", "dynamicpo_mppo": "mppo"}
_PLUGIN_NAMES = {
    "dynamicpo": "DynamicPO",
    "dynamicpo_sdpo": "DynamicPO-S-DPO",
    "dynamicpo_mppo": "DynamicPO-MPPO",
}


def select(cfg: DictConfig, path: str) -> Any:
    """The value at ``path`` (interpolations resolved), or ``_ABSENT`` when it is not set
    or cannot be resolved outside the run (``${hydra:...}``)."""
    value = OmegaConf.select(
        cfg, path, default=_ABSENT, throw_on_resolution_failure=False, throw_on_missing=False
    )
    if value is None:
        return _ABSENT
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        value = tuple(value)
    return value


def read_factor(cfg: DictConfig, name: str, source: Path) -> Any:
    factor = FACTORS[name]
    for path in factor.paths:
        value = select(cfg, path)
        if value is not _ABSENT:
            return value
    if factor.default is _REQUIRED:
        keys = " or ".join(factor.paths)
        raise ReportError(f"{source}: no {keys} ({factor.what}, needed by the report)")
    return factor.default


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a nested dict; lists become JSON text."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        node = json.dumps(node)
    return {prefix[:-1]: node}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@dataclass
class Job:
    """One run folder: its config, its results (None: unfinished) and its training logs."""

    path: Path
    config: DictConfig
    results: dict[str, Any] | None

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Every config leaf (unresolved) except the :data:`IGNORED` ones."""
        flat = flatten(OmegaConf.to_container(self.config, resolve=False))
        return {k: v for k, v in flat.items() if not _under(k, IGNORED)}

    def curve(self, stage: str, column: str) -> pd.DataFrame | None:
        """``step`` and ``column`` from ``logs/<stage>/metrics.csv`` (rows where it was
        logged, one per step, the last one kept), or None when the job has no such log."""
        frame = _read_metrics(self.path / "logs" / stage / "metrics.csv")
        if frame is None or column not in frame.columns:
            return None
        rows = frame[["step", column]].dropna()
        if rows.empty:
            return None
        return rows.drop_duplicates("step", keep="last").sort_values("step")


_METRICS_CACHE: dict[Path, pd.DataFrame | None] = {}


def _read_metrics(path: Path) -> pd.DataFrame | None:
    if path not in _METRICS_CACHE:
        if not path.is_file():
            _METRICS_CACHE[path] = None
        else:
            try:
                frame = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
                raise ReportError(f"{path}: not a readable CSV ({err})") from None
            if "step" not in frame.columns:
                raise ReportError(f"{path}: no 'step' column (expected Lightning's CSV log)")
            _METRICS_CACHE[path] = frame
    return _METRICS_CACHE[path]


def _is_job_dir(names: set[str]) -> bool:
    return "config.yaml" in names or "results.json" in names or ".hydra" in names


def find_jobs(root: Path) -> tuple[list[Job], list[Path]]:
    """Finished jobs and unfinished job folders under ``root`` (a run, a sweep, a folder of
    sweeps). A job folder holds ``config.yaml`` (or Hydra's ``.hydra/``); it is finished
    once it holds ``results.json``. Hidden folders and ``wandb/`` are not searched."""
    if not root.exists():
        raise ReportError(f"{root}: no such folder")
    if not root.is_dir():
        raise ReportError(f"{root}: expected a run folder, a sweep folder or a folder of sweeps")
    _METRICS_CACHE.clear()
    finished, unfinished = [], []
    for folder, dirs, files in os.walk(root):
        names = set(files) | set(dirs)
        if _is_job_dir(names):
            dirs[:] = []
            finished_job = read_job(Path(folder), names)
            if finished_job is None:
                unfinished.append(Path(folder))
            else:
                finished.append(finished_job)
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "wandb")
    finished.sort(key=lambda j: str(j.path))
    return finished, sorted(unfinished)


def read_job(folder: Path, names: set[str]) -> Job | None:
    """The finished job in ``folder``, or None when it has not finished."""
    if "results.json" not in names:
        return None
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        raise ReportError(f"{folder}: results.json without config.yaml (cannot tell its settings)")
    try:
        config = OmegaConf.load(config_path)
    except Exception as err:  # YAML errors come in several types
        raise ReportError(f"{config_path}: not a readable config ({err})") from None
    if not isinstance(config, DictConfig):
        raise ReportError(f"{config_path}: expected a mapping of settings")
    try:
        results = json.loads((folder / "results.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{folder / 'results.json'}: not valid JSON ({err})") from None
    if not isinstance(results, dict):
        raise ReportError(f"{folder / 'results.json'}: expected an object of metrics")
    return Job(folder, config, results)


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1]


def objective_id(target: Any) -> str:
    """``conf/objective`` name of an objective ``_target_`` (see :data:`OBJECTIVE_NAMES`)."""
    short = _short(target)
    return OBJECTIVE_NAMES.get(re.sub(r"[^a-z0-9]", "", short.lower()), short)


def method_label(f: dict[str, Any]) -> str:
    """The method's name as the paper writes it, with the switches that are off."""
    name = objective_id(f["objective"])
    if name in _BASES:
        return _BASES[name]
    off_stages = [s for s, key in (("I", "stage1"), ("II", "stage2")) if f.get(key) is False]
    missing = []
    if off_stages:
        missing.append("Stage (" + " & ".join(off_stages) + ")")
    if f.get("dynamic_beta") is False and name != "topk":
        missing.append("dynamic β")
    suffix = (" w/o " + " & ".join(missing)) if missing else ""
    if name in _PLUGIN_NAMES:
        return _PLUGIN_NAMES[name] + suffix
    if name == "topk":
        return f"Top-K (k={f.get('k')})" + (" + dynamic β" if f.get("dynamic_beta") else "")
    if name == "beta_dpo":
        return "β-DPO" + suffix
    return name + suffix


def objective_name(entry: Entry) -> str | None:
    """The objective's config name (``dmpo``, ``dynamicpo``, ``topk``, ...); None for SFT
    and baselines."""
    return objective_id(entry.factors["objective"]) if entry.stage == "po" else None


def is_full_plugin(entry: Entry) -> bool:
    """A DynamicPO plug-in with Stage I, Stage II and dynamic β all on."""
    f = entry.factors
    return objective_name(entry) in PLUGINS and all(
        f.get(k) is not False for k in ("stage1", "stage2", "dynamic_beta")
    )


@dataclass
class Entry:
    """One result of one job: a stage (``po``, ``sft``) or a baseline, at one seed."""

    job: Job
    stage: str
    method: str
    factors: dict[str, Any]
    settings: dict[str, Any]
    metrics: dict[str, float]

    @property
    def seed(self) -> Any:
        return self.factors["seed"]


def _stage_metrics(results: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in results.items():
        if key.startswith(prefix) and isinstance(value, int | float):
            out[key[len(prefix) :]] = float(value)
    return out


def untrained(cfg: DictConfig) -> bool:
    """The SFT stage made no training step (``trainer.max_steps=0``, ``sft.max_epochs=0``
    or ``sft.max_train_examples=0``): its results are the pretrained backbone's."""
    zero = ("trainer.max_steps", "sft.max_epochs", "sft.max_train_examples")
    return any(select(cfg, path) == 0 for path in zero)


def job_entries(job: Job) -> list[Entry]:
    """The results a finished job holds, each with the settings it depends on."""
    cfg, src = job.config, job.path / "config.yaml"
    factors = {name: read_factor(cfg, name, src) for name in ("dataset", "seed", "task")}
    for name in ("tokenizer", "candidates", "stages", "baseline"):
        factors[name] = read_factor(cfg, name, src)
    if "baselines" in str(factors["task"]):
        metrics = _stage_metrics(job.results, "")
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
        settings = {k: v for k, v in job.settings.items() if _under(k, _BASELINE_SUBTREES)}
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
            if _under(k, _SFT_SUBTREES) and not _under(k, _NOT_SFT)
        }
        sft_factors = {**factors, "stages": None}
        metrics = _stage_metrics(job.results, "sft:")
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
        metrics = _stage_metrics(job.results, "po:")
        label = method_label(po_factors)
        entries.append(Entry(job, "po", label, po_factors, dict(job.settings), metrics))
    return entries


def _freeze(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Condition:
    """Entries that differ only in the seed."""

    entries: list[Entry]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> Entry:
        return self.entries[0]

    @property
    def stage(self) -> str:
        return self.first.stage

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def factors(self) -> dict[str, Any]:
        return {k: v for k, v in self.first.factors.items() if k != "seed"}

    @property
    def seeds(self) -> list[Any]:
        return [e.seed for e in self.entries]

    def values(self, split: str, metric: str) -> list[float]:
        key = f"{split}/{metric}"
        out = []
        for entry in self.entries:
            value = entry.metrics.get(key)
            if value is not None and not math.isnan(value):
                out.append(value)
        return out

    def stat(self, split: str, metric: str) -> Stat:
        return Stat.of(self.values(split, metric))


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof 1; NaN below two values) of n values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, 0)
        arr = np.asarray(values, dtype=float)
        return cls(float(arr.mean()), float(arr.std(ddof=1)) if n > 1 else math.nan, n)

    def text(self) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.4f} (n=1)"
        return f"{self.mean:.4f} ± {self.std:.4f} (n={self.n})"


@dataclass
class Study:
    """Everything the report reads: finished jobs, unfinished folders, conditions."""

    root: Path
    jobs: list[Job]
    unfinished: list[Path]
    conditions: list[Condition]
    duplicates: list[tuple[Path, Path]]
    extra_keys: list[str]

    def varying(self) -> dict[str, list[Any]]:
        """Each factor (and extra key) with more than one value among the conditions."""
        out: dict[str, list[Any]] = {}
        names = ("dataset", *CONTEXT, "method")
        for name in names:
            values = {_freeze(_factor_or_method(c, name)) for c in self.conditions}
            values.discard(_freeze(None))
            if len(values) > 1:
                out[name] = sorted(json.loads(v) for v in values)
        seeds = {_freeze(s) for c in self.conditions for s in c.seeds}
        if len(seeds) > 1:
            out["seed"] = sorted(json.loads(s) for s in seeds)
        for key in self.extra_keys:
            out[key] = sorted({str(c.extras.get(key, "–")) for c in self.conditions})
        return out


def _factor_or_method(cond: Condition, name: str) -> Any:
    return cond.method if name == "method" else cond.factors.get(name)


def factor_key(entry: Entry) -> str:
    factors = {k: v for k, v in entry.factors.items() if k != "seed"}
    return _freeze([entry.stage, entry.method, factors])


def group_conditions(entries: list[Entry]) -> tuple[list[Condition], list[tuple[Path, Path]]]:
    """Entries with the same stage and settings, one per seed. SFT results shared by
    several jobs (the same SFT model) count once per seed; any other second job with the
    same settings and seed is left out and returned as ``(kept, left out)``."""
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[_freeze([entry.stage, entry.settings])].append(entry)
    conditions, duplicates = [], []
    for members in groups.values():
        by_seed: dict[str, Entry] = {}
        for entry in members:
            key = _freeze(entry.seed)
            if key in by_seed:
                if entry.stage != "sft":
                    duplicates.append((by_seed[key].job.path, entry.job.path))
                continue
            by_seed[key] = entry
        conditions.append(Condition(list(by_seed.values())))
    return conditions, duplicates


def assign_extras(conditions: list[Condition]) -> list[str]:
    """Settings outside :data:`FACTORS` that tell apart conditions whose factors are all
    equal (a learning rate, β, a data cap, ...); stored on each condition."""
    by_factors: dict[str, list[Condition]] = defaultdict(list)
    for cond in conditions:
        by_factors[factor_key(cond.first)].append(cond)
    keys: set[str] = set()
    for group in by_factors.values():
        if len(group) < 2:
            continue
        for key in set().union(*(c.first.settings for c in group)):
            if len({_freeze(c.first.settings.get(key, "–")) for c in group}) > 1:
                keys.add(key)
    for cond in conditions:
        cond.extras = {k: cond.first.settings.get(k, "–") for k in sorted(keys)}
    return sorted(keys)


def collect(root: Path) -> Study:
    """Read every job under ``root`` and group the finished ones into conditions."""
    jobs, unfinished = find_jobs(root)
    if not jobs:
        hint = f" ({len(unfinished)} unfinished: no results.json)" if unfinished else ""
        raise ReportError(
            f"{root}: no finished job (a folder with config.yaml and results.json){hint}"
        )
    entries = [entry for job in jobs for entry in job_entries(job)]
    conditions, duplicates = group_conditions(entries)
    extra_keys = assign_extras(conditions)
    conditions.sort(key=lambda c: (sort_key(c), _freeze(c.extras)))
    return Study(root, jobs, unfinished, conditions, duplicates, extra_keys)


_PLUGIN_ORDER = {"dynamicpo": 0, "dynamicpo_sdpo": 1, "dynamicpo_mppo": 2}


def method_rank(cond: Condition) -> tuple:
    """Paper order: baselines, SFT, plain objectives, DynamicPO (ablations after the full
    method: w/o Stage I, II, I & II, dynamic β), Top-K by k, others."""
    entry = cond.first
    if entry.stage == "baseline":
        return (0, entry.method)
    if entry.stage == "sft":
        return (1, entry.method != "zero-shot")
    name = objective_name(entry)
    f = entry.factors
    if name in _BASES:
        return (2, list(_BASES).index(name))
    if name in PLUGINS:
        off = (f.get("stage1") is False, f.get("stage2") is False, f.get("dynamic_beta") is False)
        ablation = [(False, False, False), (True, False, False), (False, True, False)]
        ablation += [(True, True, False), (False, False, True)]
        rank = ablation.index(off) if off in ablation else len(ablation) + sum(off)
        return (3, _PLUGIN_ORDER[name], rank, cond.method)
    if name == "topk":
        return (4, f.get("k") or 0, cond.method)
    return (5, cond.method)


def _orderable(value: Any) -> tuple:
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value), "")
    return (2, 0, str(value))


def sort_key(cond: Condition) -> tuple:
    f = cond.factors
    return (
        _orderable(f.get("dataset")),
        method_rank(cond),
        *(_orderable(f.get(name)) for name in CONTEXT),
    )


def binned(condition: Condition, column: str, bins: int) -> list[np.ndarray]:
    """Per seed: the mean of ``column`` of the preference stage's log in each of ``bins``
    equal intervals of training progress. A step's progress is its middle,
    (step + 0.5) / (last step + 1), so the first and last intervals hold the first and
    last steps however few there are (NaN where nothing was logged). Jobs without the
    column are left out."""
    out = []
    for entry in condition.entries:
        curve = entry.job.curve("po", column)
        if curve is None:
            continue
        steps = curve["step"].to_numpy(dtype=np.int64)
        values = curve[column].to_numpy(dtype=float)
        total = int(steps.max()) + 1
        index = np.minimum((2 * steps + 1) * bins // (2 * total), bins - 1)
        means = np.full(bins, np.nan)
        for b in range(bins):
            if (index == b).any():
                means[b] = values[index == b].mean()
        out.append(means)
    return out


def bin_stats(per_seed: list[np.ndarray], bins: int) -> list[Stat]:
    """Each interval's mean ± std over the seeds that logged something in it."""
    return [Stat.of([float(a[b]) for a in per_seed if not math.isnan(a[b])]) for b in range(bins)]


# Training summaries: name -> (title, column, intervals, which interval; None: all steps).
TRAINING = {
    "selected": ("negatives selected / example", SELECT_COUNT, 1, 0),
    "win_rate_last": ("win rate, last 20%", WIN_RATE, 5, 4),
    "critical_first": ("critical share, first third", CRITICAL, 3, 0),
    "critical_last": ("critical share, last third", CRITICAL, 3, 2),
    "beta": ("mean β", BETA, 1, 0),
}


def training_stat(condition: Condition, name: str) -> Stat:
    """A :data:`TRAINING` summary of the condition's training logs, over its seeds."""
    _, column, bins, index = TRAINING[name]
    return bin_stats(binned(condition, column, bins), bins)[index]
