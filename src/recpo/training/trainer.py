"""Build a Lightning Trainer for one stage of a run from the Hydra config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from recpo.training.loggers import is_rank_zero, make_loggers

__all__ = ["AtomicCheckpointIO", "is_rank_zero", "make_loggers", "make_trainer"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, so an
    interrupted write never leaves a truncated checkpoint behind."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def make_trainer(
    cfg: DictConfig, stage: str, max_epochs: int, monitor: str = "val/hr@1"
) -> L.Trainer:
    """The stage's Trainer: ``cfg.trainer`` (the settings that change the weights) with
    ``cfg.runtime.trainer`` (those that do not), epochs from the stage."""
    out = Path(cfg.paths.output_dir)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks.append(
        ModelCheckpoint(
            dirpath=out / stage / "checkpoints",
            filename="epoch{epoch}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="max",
            save_top_k=1,
            save_last=True,
        )
    )
    strategy = cfg.trainer.get("strategy")
    # DeepSpeed writes checkpoint folders through its own engine.
    plugins = [AtomicCheckpointIO()] if strategy is None or isinstance(strategy, str) else []
    runtime = OmegaConf.select(cfg, "runtime.trainer", default=None) or {}
    clash = sorted(set(runtime) & set(cfg.trainer))
    if clash:
        raise ValueError(
            f"{clash} set both in trainer and runtime.trainer: each Trainer argument "
            "belongs to one of them (runtime.trainer: those that never change the weights)"
        )
    return hydra.utils.instantiate(
        cfg.trainer,
        **{**OmegaConf.to_container(runtime, resolve=True), "default_root_dir": str(out / stage)},
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=make_loggers(cfg, stage) or False,
        plugins=plugins,
    )
