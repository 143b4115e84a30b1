"""Test-only helpers for running the pipeline under DeepSpeed ZeRO-2 on CPU ranks.

Nothing in ``conf/`` or ``src/`` refers to this module: a test selects it on the
command line (``trainer.strategy._target_=tests.distributed.cpu_deepspeed.CPUDeepSpeedStrategy``),
and production runs use Lightning's own ``DeepSpeedStrategy`` on GPUs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy`` on CPU ranks (DeepSpeed's CPU accelerator with
    gloo, ``DS_ACCELERATOR=cpu``). Lightning refuses any accelerator but CUDA, checks
    CUDA device indices and hands DeepSpeed the CUDA index of the root device; this
    class lifts those three and changes nothing else."""

    def setup_environment(self) -> None:
        # DeepSpeedStrategy's own check refuses the CPU accelerator: skip to DDP's.
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # As DeepSpeedStrategy, without the CUDA device-index check.
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        # A CPU device has no index: DeepSpeed gets this rank's local rank instead.
        import deepspeed

        initialize = deepspeed.initialize

        def on_this_rank(*a: Any, args: Any = None, **kw: Any) -> Any:
            return initialize(*a, args=argparse.Namespace(device_rank=self.local_rank), **kw)

        with mock.patch.object(deepspeed, "initialize", on_this_rank):
            return super()._setup_model_and_optimizer(*args, **kwargs)


class SaveTrainedWeights(L.Callback):
    """After each stage's fit, every rank saves its trainable parameters to
    ``<out>/<stage>-rank<r>.pt`` (the stage is the Trainer's root folder name)."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        stage = Path(trainer.default_root_dir).name
        weights = {
            name: p.detach().float().cpu().clone()
            for name, p in pl_module.named_parameters(remove_duplicate=False)
            if p.requires_grad
        }
        torch.save(weights, self.out / f"{stage}-rank{trainer.global_rank}.pt")
