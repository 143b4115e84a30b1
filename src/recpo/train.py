"""Entry point: ``python -m recpo.train +experiment=NAME [overrides]``.

Seeds, runs the task named by ``task`` (the LLM pipeline or a baseline) and writes
``results.json`` into the run folder. A run folder that already holds
``results.json`` is a finished job: it is reported and skipped, which makes a
re-run sweep (with fixed job folders, see ``conf/sweep``) train only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from recpo.config import CONFIG_DIR, CONFIG_NAME, drop_keys
from recpo.data.sources import READER_KEY
from recpo.errors import ConfigError, RecpoError
from recpo.experiment_configs import register as register_experiments
from recpo.ranks import is_rank_zero
from recpo.schema import check_config
from recpo.training.distributed import export_launcher_ranks

log = logging.getLogger("recpo")
# Variables Lightning's process launcher sets in the launching process.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


# Not part of what a job computes: where files go, speed, printing and logging, which of
# its results is handed to Hydra, and the code that reads the data (READER_KEY: the
# format is data.source.format).
_NOT_JOB_SETTINGS = ("paths", "runtime", "logger", "optimized_metric", READER_KEY)


def _job_settings(cfg: DictConfig) -> dict:
    """The settings that define a job (everything in ``_NOT_JOB_SETTINGS`` left out)."""
    return drop_keys(OmegaConf.to_container(cfg, resolve=False), _NOT_JOB_SETTINGS)


def check_same_job(cfg: DictConfig, saved: Path) -> None:
    """Refuse to treat a folder as finished when it holds a job with other settings."""
    if saved.is_file() and _job_settings(OmegaConf.load(saved)) != _job_settings(cfg):
        raise RuntimeError(
            f"{saved.parent} holds a finished job with different settings; "
            "use a new output folder (hydra.run.dir / hydra.sweep.dir) instead of overwriting it"
        )


# The most bytes a file name may hold (ext4, XFS, APFS, NTFS).
MAX_NAME_BYTES = 255


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name (``conf/sweep/_base.yaml``): its overrides as Hydra joins
    them (``override_dirname``) when they fit in a file name, otherwise their first 200
    bytes up to the last comma and ``hash-`` with 16 hex digits of the SHA-256 of the
    whole. The same overrides always give the same name, so a re-run still skips
    finished jobs and resumes interrupted ones."""
    raw = overrides.encode()
    if len(raw) <= MAX_NAME_BYTES:
        return overrides
    head = raw[:200].decode(errors="ignore")
    head = head[: head.rfind(",")] if "," in head else head
    return f"{head},hash-{hashlib.sha256(raw).hexdigest()[:16]}"


OmegaConf.register_new_resolver("recpo.job_dirname", job_dirname, replace=True)


def check_optimized_metric(cfg: DictConfig) -> None:
    """Refuse before training an ``optimized_metric`` the LLM pipeline cannot produce:
    ``[stage:]split/name`` needs the stage in ``stages`` and the split in ``eval.splits``."""
    key = cfg.get("optimized_metric")
    if key is None or OmegaConf.select(cfg, "task._target_") != "recpo.pipeline.run_llm":
        return
    stage, _, rest = key.rpartition(":")
    split = rest.split("/", 1)[0]
    if stage and stage not in cfg.stages:
        raise ConfigError(
            f"optimized_metric={key!r} names stage {stage!r}, which is not in "
            f"stages={list(cfg.stages)}"
        )
    if "/" in rest and split not in cfg.eval.splits:
        raise ConfigError(
            f"optimized_metric={key!r} needs split {split!r}, which is not in "
            f"eval.splits={list(cfg.eval.splits)}"
        )


def optimized_value(cfg: DictConfig, metrics: dict) -> float | None:
    """``metrics[cfg.optimized_metric]``, the value returned to Hydra (``None``: nothing)."""
    key = cfg.get("optimized_metric")
    if key is None or not is_rank_zero():
        # Only rank 0 evaluates; the other processes of a multi-device job return nothing.
        return None
    if key not in metrics:
        known = ", ".join(sorted(k for k in metrics if "/" in k)[:12])
        raise ConfigError(
            f"optimized_metric={key!r} is not among this run's results "
            f"({cfg.paths.output_dir}/results.json): choose one of {known}, ..."
        )
    return float(metrics[key])


def train(cfg: DictConfig) -> dict:
    """Run the configured task and return its metrics (also saved as ``results.json``)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if OmegaConf.select(cfg, "task._target_") == "recpo.pipeline.run_llm":
        check_config(cfg)  # every value, before any data is loaded or model built
    check_optimized_metric(cfg)
    out = Path(cfg.paths.output_dir)
    results = out / "results.json"
    if results.is_file():
        check_same_job(cfg, out / "config.yaml")
        log.info("%s exists: job already finished, skipping", results)
        return json.loads(results.read_text())
    L.seed_everything(cfg.seed, workers=True)
    out.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        OmegaConf.save(cfg, out / "config.yaml", resolve=False)
    run = hydra.utils.instantiate(cfg.task)
    metrics = run(cfg)
    if is_rank_zero():
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        tmp.replace(results)
    return metrics


@contextmanager
def single_job_argv():
    """Make multi-process jobs of a ``-m`` sweep launch correctly.

    Lightning starts the extra DDP processes by re-running ``sys.argv``; inside a
    sweep that would re-launch the whole sweep. For the duration of one job,
    ``sys.argv`` becomes that job's own overrides (no ``-m``) and Hydra's run
    folder becomes the job's folder, so the extra processes run this job only.
    Afterwards the process-group state Lightning left in the environment is
    cleared, so the next job of the sweep starts its own processes.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or not is_rank_zero() or "LOCAL_RANK" in os.environ:
        yield
        return
    saved_argv, saved_env = list(sys.argv), {k: os.environ.get(k) for k in _DDP_ENV}
    sys.argv = [sys.argv[0], *hc.overrides.task]
    with read_write(hc.run), open_dict(hc.run):
        hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


register_experiments()  # the composed <dataset>_<method> names, before Hydra composes


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    """Train, then return ``optimized_metric`` (a validation metric by default) to Hydra:
    the value an optimizing sweeper tunes."""
    try:
        # A cluster launcher's job started every rank itself: tell torch which this is.
        export_launcher_ranks(cfg.trainer.devices, cfg.trainer.get("num_nodes", 1))
        with single_job_argv():
            metrics = train(cfg)
        return optimized_value(cfg, metrics)
    except RecpoError as err:
        # Bad data, a setting that cannot work, a backbone that cannot be obtained: one
        # line naming the kind and what to do, not a stack trace.
        log.error("%s: %s", err.kind, err)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
