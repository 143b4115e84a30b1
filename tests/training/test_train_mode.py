"""The policy trains in train mode and is validated in eval mode; a frozen reference
copy stays in eval mode throughout (``from_pretrained`` returns models in eval mode
and Lightning keeps each submodule's mode, so this is set by the stage itself)."""

from __future__ import annotations

import hydra
import lightning as L
import pytest
import torch

from recpo.models.backbone import load_backbone
from recpo.pipeline import build_datamodule, stage_data_args
from recpo.training.preference import PreferenceModule
from recpo.training.trainer import make_trainer
from tests.conftest import compose

OVERRIDES = [
    "data.source.synthetic.num_users=40",
    "po.max_train_examples=8",
    "po.batch_size=4",
    "po.num_negatives=3",
    "po.max_epochs=1",
    "eval.max_examples=4",
    "runtime.eval_batch_size=8",
    "logger={}",
    "callbacks={}",
]


class RecordModes(L.Callback):
    """Which modules are in train mode at each training and validation batch."""

    def __init__(self) -> None:
        self.train: list[tuple[bool, bool]] = []
        self.val: list[bool] = []

    @staticmethod
    def modes(model) -> set[bool]:
        return {m.training for m in model.modules()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ref = pl_module.ref_model
        self.train.append(
            (self.modes(pl_module.model), self.modes(ref) if ref is not None else {False})
        )

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(self.modes(pl_module.model))


def fit_po(overrides: list[str], reference: str, callback: L.Callback, tmp_path) -> None:
    """One PO epoch of the tiny backbone whose policy starts in eval mode, as
    ``from_pretrained`` returns it, under the pipeline's Trainer with ``callback``."""
    cfg = compose([*OVERRIDES, *overrides], tmp_path / "run")
    dm = build_datamodule(cfg, "po")
    ds = dm.load()
    backbone = load_backbone(
        cfg.backbone,
        model_dir=None,
        cache_dir=cfg.paths.cache_dir,
        titles=list(ds.catalog.names.values()),
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(backbone.tokenizer)
    backbone.model.eval()
    module = PreferenceModule(
        backbone.model,
        objective=hydra.utils.instantiate(cfg.objective),
        optimizer=hydra.utils.instantiate(cfg.po.optimizer),
        reference=reference,
    )
    trainer = make_trainer(cfg, "po", 1, extra_callbacks=[callback])
    torch.manual_seed(0)
    trainer.fit(module, datamodule=dm.for_training(**stage_data_args(cfg, "po")))


@pytest.mark.parametrize(
    "finetune,reference", [("full", "copy"), ("lora", "precompute"), ("lora", "disable_adapter")]
)
def test_policy_trains_in_train_mode_and_reference_stays_in_eval(tmp_path, finetune, reference):
    record = RecordModes()
    fit_po([f"backbone.finetune={finetune}"], reference, record, tmp_path)
    assert record.train and record.val
    assert all(policy == {True} and ref == {False} for policy, ref in record.train)
    assert all(modes == {False} for modes in record.val)


class CountCheckpointing(L.Callback):
    """Calls of the policy's first decoder layer through its gradient-checkpointing
    function during each training batch (transformers skips it outside train mode)."""

    def __init__(self) -> None:
        self.per_batch: list[int] = []
        self.calls = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        layer = pl_module.model.get_decoder().layers[0]
        checkpoint = layer._gradient_checkpointing_func

        def counted(*args, **kwargs):
            self.calls += 1
            return checkpoint(*args, **kwargs)

        layer._gradient_checkpointing_func = counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.calls = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.per_batch.append(self.calls)


def test_gradient_checkpointing_is_used_in_training(tmp_path):
    """``backbone.gradient_checkpointing`` takes effect: transformers checkpoints a layer
    only in train mode, so a policy left in eval mode silently trained without it."""
    count = CountCheckpointing()
    fit_po(["backbone.gradient_checkpointing=true"], "copy", count, tmp_path)
    assert count.per_batch and set(count.per_batch) == {1}  # one policy forward per step
