"""Entry point: ``python -m recpo.train +experiment=NAME [overrides]``.

Seeds, runs the task named by ``task`` (the LLM pipeline or a baseline) and writes
``results.json`` into the run folder. A run folder that already holds
``results.json`` is a finished job: it is reported and skipped, which makes a
re-run sweep (with fixed job folders, see ``conf/sweep``) train only what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from recpo.data.errors import DataError
from recpo.models.backbone import BackboneError
from recpo.training.trainer import is_rank_zero

log = logging.getLogger("recpo")
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
# Variables Lightning's process launcher sets in the launching process.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


def _job_settings(cfg: DictConfig) -> dict:
    """The settings that define a job (everything but where files go)."""
    settings = OmegaConf.to_container(cfg, resolve=False)
    settings.pop("paths", None)
    return settings


def check_same_job(cfg: DictConfig, saved: Path) -> None:
    """Refuse to treat a folder as finished when it holds a job with other settings."""
    if saved.is_file() and _job_settings(OmegaConf.load(saved)) != _job_settings(cfg):
        raise RuntimeError(
            f"{saved.parent} holds a finished job with different settings; "
            "use a new output folder (hydra.run.dir / hydra.sweep.dir) instead of overwriting it"
        )


def train(cfg: DictConfig) -> dict:
    """Run the configured task and return its metrics (also saved as ``results.json``)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        with single_job_argv():
            metrics = train(cfg)
    except DataError as err:
        # Bad input: one clear line, not a stack trace.
        log.error("data error: %s", err)
        raise SystemExit(2) from None
    except BackboneError as err:
        # A backbone that cannot be obtained: one line saying what to do.
        log.error("backbone error: %s", err)
        raise SystemExit(2) from None
    return metrics.get("test/hr@1")


if __name__ == "__main__":
    main()
