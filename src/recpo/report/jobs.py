"""Find the job folders under a path and read their settings.

A *job* is a run folder: ``config.yaml`` (the whole Hydra config, unresolved),
``results.json`` once it finished (absent: unfinished, counted and named, never
guessed) and ``logs/<stage>/metrics.csv`` (Lightning's CSV logger).

What varies is read through :data:`FACTORS`, the one place that knows where a setting
lives in the config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from recpo.data.sources import READER_KEY
from recpo.errors import ReportError

REQUIRED = object()  # a factor the job's config must set
ABSENT = object()  # a setting the config does not hold (or cannot resolve outside the run)


@dataclass(frozen=True)
class Factor:
    """Where a setting lives: candidate config paths (the first one set wins) and its
    value when none is set (``REQUIRED``: the job's config must set one)."""

    paths: tuple[str, ...]
    default: Any = REQUIRED
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
    "po.compile_objective",  # torch.compile of the objective: eager results, to rounding
    READER_KEY,  # the code that reads the data (its format is data.source.format)
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
)


def select(cfg: DictConfig, path: str) -> Any:
    """The value at ``path`` (interpolations resolved), or ``ABSENT`` when it is not set
    or cannot be resolved outside the run (``${hydra:...}``)."""
    value = OmegaConf.select(
        cfg, path, default=ABSENT, throw_on_resolution_failure=False, throw_on_missing=False
    )
    if value is None:
        return ABSENT
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        value = tuple(value)
    return value


def read_factor(cfg: DictConfig, name: str, source: Path) -> Any:
    factor = FACTORS[name]
    for path in factor.paths:
        value = select(cfg, path)
        if value is not ABSENT:
            return value
    if factor.default is REQUIRED:
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


def under(key: str, prefixes: Iterable[str]) -> bool:
    """Whether the flat ``key`` is one of ``prefixes`` or lies below one."""
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
        return {k: v for k, v in flat.items() if not under(k, IGNORED)}

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


def untrained(cfg: DictConfig) -> bool:
    """The SFT stage made no training step (``trainer.max_steps=0``, ``sft.max_epochs=0``
    or ``sft.max_train_examples=0``): its results are the pretrained backbone's."""
    zero = ("trainer.max_steps", "sft.max_epochs", "sft.max_train_examples")
    return any(select(cfg, path) == 0 for path in zero)
