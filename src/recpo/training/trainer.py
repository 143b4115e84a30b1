"""Build the Lightning Trainer of one stage of a run (an LLM stage or a baseline)
from the Hydra config."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from recpo.training.loggers import make_loggers


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


def stage_checkpoint(out: Path, stage: str, monitor: str = "val/hr@1") -> ModelCheckpoint:
    """An LLM stage's best checkpoint by ``monitor``, in ``out/<stage>/checkpoints``."""
    return ModelCheckpoint(
        dirpath=out / stage / "checkpoints",
        filename="epoch{epoch}",
        auto_insert_metric_name=False,
        monitor=monitor,
        mode="max",
        save_top_k=1,
    )


def latest_checkpoint(out: Path, stage: str) -> ModelCheckpoint:
    """``out/<stage>/checkpoints/last.ckpt``, what an interrupted run resumes from: the
    latest state, written at every validation (validating once an epoch: at the epoch's
    end). Lightning's own ``save_last`` writes it only when the best checkpoint changes,
    so a run whose metric stopped improving would resume from an older state."""
    return ModelCheckpoint(
        dirpath=out / stage / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )


def make_trainer(
    cfg: DictConfig,
    stage: str,
    max_epochs: int,
    checkpoint: ModelCheckpoint | None = None,
    *,
    extra_callbacks: Sequence[Any] = (),
    csv_version: str | None = "stage",
    root: Path | None = None,
    **arguments: Any,
) -> L.Trainer:
    """The Trainer of one stage (an LLM stage or a baseline): ``cfg.trainer`` (the
    settings that change the weights) with ``cfg.runtime.trainer`` (those that do
    not), the stage's epochs, ``cfg.callbacks`` then ``extra_callbacks`` then
    ``checkpoint`` (default: :func:`stage_checkpoint` and :func:`latest_checkpoint`),
    the stage's loggers and atomic checkpoint writes.

    Args:
        csv_version: The CSV log's version (``None``: Lightning's numbered versions).
        root: ``default_root_dir`` (default: ``<output_dir>/<stage>``).
        arguments: Trainer arguments that replace ``cfg.trainer``'s (a baseline's
            ``gradient_clip_val``).
    """
    out = Path(cfg.paths.output_dir)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    checkpoints = (
        [checkpoint]
        if checkpoint
        else [stage_checkpoint(out, stage), latest_checkpoint(out, stage)]
    )
    callbacks += [*extra_callbacks, *checkpoints]
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
    runtime = OmegaConf.to_container(runtime, resolve=True)
    return hydra.utils.instantiate(
        cfg.trainer,
        **{**runtime, "default_root_dir": str(root or out / stage)},
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=make_loggers(cfg, stage, csv_version=csv_version) or False,
        plugins=plugins,
        **arguments,
    )
