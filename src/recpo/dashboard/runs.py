"""The settings of a sweep's preference runs, read from its job folders or from W&B."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recpo.dashboard.definition import FACETS, NEGATIVES, PO_STAGE, SERIES, TABLE_SETTINGS
from recpo.errors import DashboardError


def run_settings(config: DictConfig) -> dict[str, Any]:
    """The dashboard's settings of one run config (``None`` where not set)."""
    from recpo.dashboard.definition import setting_path
    from recpo.report.jobs import ABSENT, select

    out = {}
    for name in dict.fromkeys((*FACETS, NEGATIVES, *SERIES, *TABLE_SETTINGS)):
        value = select(config, setting_path(name))
        out[name] = None if value is ABSENT else value
    return out


def _is_po(config: DictConfig) -> bool:
    stages = OmegaConf.select(config, "stages", default=None)
    return stages is not None and PO_STAGE in list(stages)


def job_configs(root: Path) -> list[tuple[Path, DictConfig]]:
    """Every job folder under ``root`` (a run, a sweep or a folder of sweeps) with its
    ``config.yaml``, finished or not; hidden folders and ``wandb/`` are not searched."""
    if not root.is_dir():
        raise DashboardError(f"{root}: no such folder")
    found = []
    for folder, dirs, files in os.walk(root):
        if "config.yaml" in files:
            dirs[:] = []
            config = OmegaConf.load(Path(folder) / "config.yaml")
            if isinstance(config, DictConfig):
                found.append((Path(folder), config))
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "wandb")
    return sorted(found, key=lambda item: str(item[0]))


def folder_runs(root: Path) -> tuple[list[dict[str, Any]], str, str | None]:
    """The settings of the preference jobs under ``root``, their W&B group (the one
    their runs were logged to: ``logger.wandb.group`` when set, else the folder of the
    sweep, as :func:`recpo.training.loggers.job_group`) and their project, when every
    job's config names the same."""
    from recpo.training.loggers import wandb_group

    jobs = [(path, cfg) for path, cfg in job_configs(root) if _is_po(cfg)]
    if not jobs:
        raise DashboardError(f"{root}: no job with a preference stage (stages with po)")

    def common(path: str) -> str | None:
        values = {str(OmegaConf.select(c, path, default=None) or "") for _, c in jobs}
        return values.pop() or None if len(values) == 1 else None

    group = common("logger.wandb.group")
    if group is None:
        parents = {path.parent.resolve() for path, _ in jobs}
        folder = parents.pop() if len(parents) == 1 and len(jobs) > 1 else root.resolve()
        group = wandb_group(folder)
    return [run_settings(cfg) for _, cfg in jobs], group, common("logger.wandb.project")


def wandb_runs(entity: str, project: str, group: str | None) -> list[dict[str, Any]]:
    """The settings of the preference runs (job type ``po``) of a W&B project, or of one
    group of it (needs a key)."""
    import wandb

    filters: dict[str, Any] = {"jobType": PO_STAGE}
    if group:
        filters["group"] = group
    runs = wandb.Api().runs(f"{entity}/{project}", filters=filters)
    settings = [run_settings(OmegaConf.create(dict(run.config))) for run in runs]
    if not settings:
        where = f"{entity}/{project}" + (f", group {group}" if group else "")
        raise DashboardError(f"no preference runs (job type po) in {where}")
    return settings
