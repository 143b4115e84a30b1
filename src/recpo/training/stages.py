"""Fit one training stage of the LLM pipeline: build its LightningModule from the
config, fit it with the stage's Trainer (resuming an interrupted attempt), load the
best epoch and save the model.

* :func:`fit_sft`: prompt -> target fine-tuning (:class:`~recpo.training.sft.SFTModule`);
* :func:`fit_po`: preference optimization against the frozen SFT reference
  (:class:`~recpo.training.preference.PreferenceModule` with ``cfg.objective``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from recpo.data.datamodule import RecDataModule
from recpo.models.backbone import Backbone
from recpo.training.common import save_pretrained_atomic
from recpo.training.preference import PreferenceModule
from recpo.training.sft import SFTModule
from recpo.training.trainer import make_trainer

log = logging.getLogger(__name__)

# Inside a DeepSpeed checkpoint folder (tag "checkpoint", one model-parallel rank): the
# module's state, which ZeRO-2 does not partition.
DEEPSPEED_MODEL_STATES = "checkpoint/mp_rank_00_model_states.pt"


def stage_module_args(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The optimiser, scheduler and scoring settings of ``cfg.sft`` / ``cfg.po``."""
    node = cfg[stage]
    return dict(
        optimizer=hydra.utils.instantiate(node.optimizer),
        scheduler=hydra.utils.instantiate(node.scheduler) if node.get("scheduler") else None,
        warmup_ratio=node.warmup_ratio,
        scoring=cfg.scoring,
    )


def resume_path(cfg: DictConfig, stage: str) -> str | None:
    """The stage's last checkpoint in this run folder, if an earlier attempt left one."""
    last = Path(cfg.paths.output_dir) / stage / "checkpoints" / "last.ckpt"
    if last.exists():  # a file, or a folder written by DeepSpeed
        log.info("resuming %s from %s", stage, last)
        return str(last)
    return None


def load_best(module: torch.nn.Module, trainer: Any) -> None:
    """Load the best checkpoint's weights (by the monitored val metric) into ``module``.

    A checkpoint holds the trained parameters only (LoRA: the adapter); the frozen
    weights are those already in ``module`` (see ``LLMModule.load_state_dict``).
    """
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    elif best and (Path(best) / DEEPSPEED_MODEL_STATES).is_file():
        # DeepSpeed's folder: the module's trained parameters (exclude_frozen_parameters).
        path = Path(best) / DEEPSPEED_MODEL_STATES
        state = torch.load(path, map_location="cpu", weights_only=False)["module"]
    else:
        return
    module.load_state_dict(state)
    log.info("loaded best checkpoint %s", best)


def reference_mode(cfg: DictConfig, objective: Any, policy: Backbone) -> str:
    """``po.reference``; ``auto``: ``none`` when the objective declares it needs no
    reference model (``needs_reference``), else the policy with its adapter disabled
    (LoRA) or a frozen copy (full fine-tuning)."""
    if cfg.po.reference != "auto":
        return cfg.po.reference
    if not objective.needs_reference:
        return "none"
    return "disable_adapter" if policy.uses_lora else "copy"


def _fit(cfg: DictConfig, stage: str, module: Any, dm: RecDataModule, max_epochs: int) -> Any:
    trainer = make_trainer(cfg, stage, max_epochs)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, stage))
    load_best(module, trainer)
    return trainer


def fit_sft(cfg: DictConfig, dm: RecDataModule, backbone: Backbone, target: Path) -> None:
    """Fine-tune on prompt -> target and save the model (LoRA: the adapter) to ``target``."""
    module = SFTModule(backbone.model, **stage_module_args(cfg, "sft"))
    trainer = _fit(cfg, "sft", module, dm, cfg.sft.max_epochs)
    if trainer.is_global_zero:
        save_pretrained_atomic(module.model, backbone.tokenizer, target)
    trainer.strategy.barrier()


def fit_po(cfg: DictConfig, dm: RecDataModule, policy: Backbone) -> None:
    """Preference optimization of ``policy`` (the SFT model) against the frozen SFT
    reference on the PO stage's data ``dm``; ``po.save_model`` saves the result into
    the run folder's ``po_model/``."""
    objective = hydra.utils.instantiate(cfg.objective)
    if cfg.po.compile_objective:
        # imported here: it registers graph substitutions only in runs that compile
        from recpo.objectives.compiled import CompiledObjective

        objective = CompiledObjective(objective)
    module = PreferenceModule(
        policy.model,
        objective=objective,
        reference=reference_mode(cfg, objective, policy),
        **stage_module_args(cfg, "po"),
    )
    trainer = _fit(cfg, "po", module, dm, cfg.po.max_epochs)
    if trainer.is_global_zero and cfg.po.save_model:
        out = Path(cfg.paths.output_dir) / "po_model"
        save_pretrained_atomic(module.model, policy.tokenizer, out)
    trainer.strategy.barrier()
