"""What the LightningModules of the pipeline's stages (SFT, PO) share: optimiser set-up,
ranking validation, checkpoints, saving."""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics import MeanMetric

from recpo.evaluation.metrics import ranking_metrics
from recpo.metric_names import HR1, RANK_METRICS, split_key
from recpo.models.scoring import score_answers

RANK_KEYS = RANK_METRICS


class LLMModule(L.LightningModule):
    """Base class of the SFT and PO modules: holds the policy, its optimiser factories
    and ranking validation.

    Validation scores the 20 candidates of each val row by sequence log-prob
    (one shared forward per prompt) and logs ``val/hr@1``, ``val/hr@5``,
    ``val/ndcg@5``; checkpoints select on ``val/hr@1``.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.05,
        scoring: str = "shared",
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_ratio = warmup_ratio
        self.scoring = scoring
        self.val_metrics = torch.nn.ModuleDict(
            {k.replace("@", "_at_"): MeanMetric() for k in RANK_KEYS}
        )

    def score(self, model: Any, batch: dict) -> Any:
        return score_answers(
            model,
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["answer_ids"],
            batch["answer_mask"],
            method=self.scoring,
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores = self.score(self.model, batch).logps
        per_row = ranking_metrics(scores, batch["target_index"])
        for key in RANK_KEYS:
            self.val_metrics[key.replace("@", "_at_")].update(per_row[key])

    def on_validation_epoch_end(self) -> None:
        for key in RANK_KEYS:
            metric = self.val_metrics[key.replace("@", "_at_")]
            self.log(split_key("val", key), metric.compute(), prog_bar=key == HR1)
            metric.reset()

    def on_fit_start(self) -> None:
        # ``from_pretrained`` returns the policy in eval mode and Lightning keeps each
        # submodule's mode: the policy trains in train mode (dropout, LoRA dropout,
        # gradient checkpointing); validation switches it to eval and back. A frozen
        # reference copy keeps the eval mode it was built in.
        self.model.train()

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    # ------------------------------------------------------------ checkpoints
    #
    # A checkpoint stores the parameters being trained (LoRA: the adapter; full
    # fine-tuning: the whole policy), never frozen weights (the LoRA base, a frozen
    # reference copy): those are rebuilt from the backbone and the SFT model by
    # every run that loads the checkpoint. The optimizer, scheduler and loop state
    # are stored by Lightning as usual.

    def trained_state_keys(self) -> set[str]:
        """State-dict keys of the trainable parameters and of the buffers."""
        keys = {n for n, p in self.named_parameters(remove_duplicate=False) if p.requires_grad}
        return keys | {n for n, _ in self.named_buffers(remove_duplicate=False)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if state:  # (DeepSpeed writes the weights itself: exclude_frozen_parameters)
            keep = self.trained_state_keys()
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k in keep}
        # The random generators too, so that a resumed run draws what an uninterrupted
        # one draws next (dropout). One process: with several, each has its own.
        if self._world_size() == 1:
            checkpoint["rng_states"] = rng_states()

    def _world_size(self) -> int:
        # A module used outside a Trainer (tests, scripts) is one process.
        return self._trainer.world_size if self._trainer is not None else 1

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint and self._world_size() == 1:
            set_rng_states(checkpoint["rng_states"])

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint's state. Frozen weights it does not hold keep their
        current values; with ``strict`` every trained parameter must be in it and
        nothing else that the module does not have."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            missing = sorted(set(result.missing_keys) & self.trained_state_keys())
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"checkpoint does not fit {type(self).__name__}: "
                    f"{len(missing)} trained parameters missing {missing[:3]}, "
                    f"{len(result.unexpected_keys)} unknown keys {result.unexpected_keys[:3]}"
                )
        return result

    @property
    def strict_loading(self) -> bool:
        if self._strict_loading is not None:
            return self._strict_loading
        # DeepSpeed loads its own checkpoint files into the wrapped module and has not
        # saved the frozen weights (exclude_frozen_parameters): load non-strictly.
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return not isinstance(getattr(self._trainer, "strategy", None), DeepSpeedStrategy)

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self._strict_loading = value

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(math.ceil(self.warmup_ratio * total))
        scheduler = self.scheduler_factory(
            optimizer, num_warmup_steps=warmup, num_training_steps=total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def rng_states() -> dict[str, Any]:
    """The global random generators of torch (CPU, CUDA), numpy and Python, in types
    that a checkpoint loads with ``weights_only``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(state), py_gauss],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = states["python"]
    random.setstate((version, tuple(state), py_gauss))


def save_pretrained_atomic(model: Any, tokenizer: Any, out: Path, merge_lora: bool = False) -> Path:
    """Write model + tokenizer to ``out`` through a temporary folder and one rename.

    A reader never sees a half-written folder; an existing ``out`` is not
    overwritten (the caller picks a new folder).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; refusing to overwrite a saved model")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        to_save = model
        if merge_lora and hasattr(model, "merge_and_unload"):
            # Keep the adapter on the live model: merge a copy of the weights only.
            import copy

            to_save = copy.deepcopy(model).merge_and_unload()
        to_save.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
