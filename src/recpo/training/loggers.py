"""The loggers of one stage of a job: a CSV log and, with ``logger=wandb``, one W&B run.

Every (job, stage) is its own W&B run: ``group`` shared by the jobs of one sweep (the
run's own folder for a single run, see :func:`wandb_group`), ``job_type`` the stage, a
name read from the job's overrides, the whole config. The run stays open through the
stage's evaluation and is closed by :func:`close_stage_loggers`, which writes the
evaluation metrics to its summary (the preference stage's summary also holds the SFT
stage's, under ``sft/``, so that a table of preference runs shows both). Only rank 0
creates runs.

``logger=wandb`` keeps the CSV log beside W&B (``conf/logger/wandb.yaml``): the report
reads training curves from ``logs/<stage>/metrics.csv``.

A stage that resumes from its checkpoint keeps the CSV rows its earlier attempt logged
(Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from recpo.metric_names import sft_summary_key
from recpo.ranks import is_rank_zero

# W&B loggers of stages not closed yet: (run folder, stage) -> loggers.
_OPEN: dict[tuple[str, str], list[Any]] = {}
# The SFT stage's evaluation of each run folder, until its preference stage is closed.
_SFT_METRICS: dict[str, dict[str, float]] = {}
# Top folders of run folders: a group is the path below the last of them.
_RUN_ROOTS = ("multirun", "outputs")


def wandb_group(folder: str | Path) -> str:
    """The W&B group of the jobs under ``folder`` (a sweep folder, or a single run's
    folder): its path below the last ``multirun`` (or ``outputs``) folder, else its name.

    Training (per-stage runs) and ``recpo.report --wandb`` both name groups with this.
    """
    parts = Path(folder).resolve().parts
    for root in _RUN_ROOTS:
        if root in parts:
            tail = parts[len(parts) - parts[::-1].index(root) :]
            if tail:
                return "/".join(tail)
    return Path(folder).resolve().name


def _hydra_job() -> Any:
    """Hydra's runtime config of this job, or ``None`` outside ``@hydra.main``."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def job_group(cfg: DictConfig) -> str:
    """``logger.wandb.group`` when set; else the sweep folder's group in a ``-m`` sweep,
    the run folder's own otherwise (:func:`wandb_group`)."""
    group = OmegaConf.select(cfg, "logger.wandb.group", default=None)
    if group:
        return str(group)
    from hydra.types import RunMode

    hc = _hydra_job()
    if hc is not None and hc.mode == RunMode.MULTIRUN:
        return wandb_group(hc.sweep.dir)
    return wandb_group(cfg.paths.output_dir)


def run_name(cfg: DictConfig, stage: str) -> str:
    """``<stage>:<the job's overrides>`` (Hydra's ``override_dirname``), or
    ``<stage>:<task_name>`` when the job has none."""
    hc = _hydra_job()
    overrides = hc.job.override_dirname if hc is not None else ""
    return f"{stage}:{overrides or cfg.task_name}"


def _kind(node: Any) -> str:
    target = str(node.get("_target_", "")) if OmegaConf.is_dict(node) else ""
    return target.rsplit(".", 1)[-1]


def make_loggers(
    cfg: DictConfig, stage: str, csv_version: str | None = "stage", wandb_only: bool = False
) -> list[Any]:
    """One logger per entry of ``cfg.logger`` for ``stage``: the CSV log in version
    ``stage`` (``csv_version=None``: Lightning's numbered versions), a new W&B run
    (rank 0 only; other ranks get Lightning's no-op). ``wandb_only``: just the W&B run
    (a stage that trains nothing but is evaluated). Each gets the whole config."""
    loggers = []
    wandb_loggers = []
    for node in (cfg.get("logger") or {}).values():
        kind = _kind(node)
        if kind == "WandbLogger":
            extra = {
                "name": run_name(cfg, stage),
                "job_type": stage,
                "group": job_group(cfg),
                # A new run even when the process has another open: never log into it.
                "reinit": "create_new",
            }
            logger = hydra.utils.instantiate(node, **extra)
            wandb_loggers.append(logger)
        elif wandb_only:
            continue
        elif kind == "CSVLogger":
            version = stage if csv_version == "stage" else csv_version
            logger = hydra.utils.instantiate(node, version=version)
            _keep_earlier_rows(logger)
        else:
            logger = hydra.utils.instantiate(node)
        loggers.append(logger)
    # The whole run config (objective, data, backbone, ...) goes with every logger,
    # so dashboards can group and filter runs by any setting.
    settings = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    settings.pop("hydra", None)
    for logger in loggers:
        logger.log_hyperparams({**settings, "stage": stage})
    if wandb_loggers and is_rank_zero():
        _OPEN.setdefault(_key(cfg, stage), []).extend(wandb_loggers)
    return loggers


def _keep_earlier_rows(logger: Any) -> None:
    """Start ``logger``'s writer without losing the ``metrics.csv`` an earlier attempt
    of the stage left in the same folder: its rows are written back, and later rows
    are appended to them (a step logged again appears twice; readers keep the last)."""
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    writer = logger.experiment  # Lightning's writer deletes the file here
    if not header:
        return
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=header)
        out.writeheader()
        out.writerows(rows)
    writer.metrics_keys = header


def _key(cfg: DictConfig, stage: str) -> tuple[str, str]:
    return (str(Path(cfg.paths.output_dir).resolve()), stage)


def close_stage_loggers(
    cfg: DictConfig, stage: str, metrics: dict[str, float], failed: bool = False
) -> None:
    """End ``stage``'s W&B runs: ``metrics`` (the stage's evaluation, e.g. ``test/hr@1``)
    into each run's summary, then finish it. The ``po`` stage's summary also gets the
    ``sft`` stage's metrics closed earlier in this process for the same run folder, as
    ``sft/<key>`` (:func:`recpo.metric_names.sft_summary_key`). A stage that trained
    nothing here (a reused SFT result) gets its own run first. Nothing on ranks other
    than 0 or without a W&B logger."""
    if not is_rank_zero():
        return
    folder = _key(cfg, stage)[0]
    summary = {k: float(v) for k, v in metrics.items()}
    if stage == "sft":
        _SFT_METRICS[folder] = summary
    elif stage == "po":
        sft = _SFT_METRICS.pop(folder, {})
        summary.update({sft_summary_key(k): v for k, v in sft.items()})
    loggers = _OPEN.pop(_key(cfg, stage), None)
    if loggers is None:
        loggers = make_loggers(cfg, stage, wandb_only=True)
        _OPEN.pop(_key(cfg, stage), None)
    if not loggers:
        return
    import wandb

    for logger in loggers:
        run = logger.experiment
        run.summary.update(summary)
        run.finish(exit_code=1 if failed else 0)
    if not _OPEN and wandb.run is None:
        # An offline run's log file is complete only once W&B's service has stopped
        # (finish() can return while it is still being written); left running while
        # another run of this process still uses it.
        wandb.teardown()
