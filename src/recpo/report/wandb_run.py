"""Log a written report to one W&B run (job type ``report``) in the jobs' group, so the
dashboard shows the tables and figures beside the training runs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from recpo.report.build import Report, runs_frame
from recpo.report.collect import Study
from recpo.report.jobs import ABSENT, select
from recpo.training.loggers import wandb_group


def _common(study: Study, path: str) -> str | None:
    """The value every finished job's config resolves ``path`` to, if they agree."""
    values = {select(job.config, path) for job in study.jobs}
    if len(values) == 1:
        value = values.pop()
        if value is not ABSENT and value is not None and str(value).strip():
            return str(value)
    return None


def report_group(study: Study) -> str:
    """The jobs' W&B group (``logger.wandb.group`` when every job's config resolves it to
    the same name); otherwise the sweep folder shared by the jobs (relative to the
    ``multirun`` / ``outputs`` folder when there is one), else the reported folder's name
    (:func:`recpo.training.loggers.wandb_group`, as the jobs' own W&B runs)."""
    group = _common(study, "logger.wandb.group")
    if group:
        return group
    parents = {job.path.parent.resolve() for job in study.jobs}
    folder = parents.pop() if len(parents) == 1 and len(study.jobs) > 1 else study.root.resolve()
    return wandb_group(folder)  # the rule the training runs' groups follow


def _mode(online: bool) -> str:
    if online:
        return "online"
    env = os.environ.get("WANDB_MODE", "").lower()
    return "disabled" if env == "disabled" else "offline"


def log_report(
    report: Report, group: str | None = None, project: str | None = None, online: bool = False
) -> str:
    """Log every table (``wandb.Table``) and figure (``wandb.Image``) of ``report``.

    Returns:
        Where the run went: its folder (offline), its URL (online), or a note when W&B is
        disabled (``WANDB_MODE=disabled``).
    """
    import wandb

    study = report.study
    group = group or report_group(study)
    project = project or _common(study, "logger.wandb.project") or "recpo"
    mode = _mode(online)
    if mode == "disabled":
        return "not written (WANDB_MODE=disabled)"
    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        name=f"report-{group}".replace("/", "-"),
        dir=str(report.out),
        mode=mode,
        reinit="create_new",  # its own run even when this process has another one open
        config={
            "report_path": str(study.root),
            "split": report.split,
            "finished_jobs": len(study.jobs),
            "unfinished_jobs": len(study.unfinished),
            "varying": {k: [str(v) for v in vs] for k, vs in study.varying().items()},
        },
    )
    try:
        data: dict[str, object] = {}
        for table in report.tables:
            data[f"tables/{table.name}"] = wandb.Table(dataframe=_plain(table.frame()))
        data["tables/runs"] = wandb.Table(dataframe=_plain(runs_frame(study, report.split)))
        for fig in report.figures:
            data[f"figures/{Path(fig.name).stem}"] = wandb.Image(
                str(report.out / fig.name), caption=fig.title
            )
        run.log(data)
        run.summary["not_drawn"] = "\n".join(report.skipped)
        run.summary["unfinished"] = "\n".join(str(p) for p in study.unfinished)
        where = run.url if mode == "online" and run.url else str(Path(run.dir).parent)
    finally:
        run.finish()
    if wandb.run is None:
        # The run's log file is complete only once W&B's service has stopped (offline
        # runs can still be at their header when finish() returns); left running while
        # another run of this process still uses it.
        wandb.teardown()
    return where


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns as text, so W&B infers one type per column."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: "" if v is None else str(v))
    return out
