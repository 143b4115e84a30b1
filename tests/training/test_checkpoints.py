"""Checkpoints of the training stages hold the trained parameters only.

A LoRA run on the tiny backbone, with the pipeline's own Trainer (``make_trainer``):
its checkpoints hold the adapter (plus optimizer, scheduler and loop state), not the
frozen base; a run stopped in its second epoch and resumed from ``last.ckpt`` ends
with the weights and validation metrics of an uninterrupted run, also when the
checkpoint was written in the middle of an epoch (validation twice an epoch); the best
checkpoint loads into a fresh module. (The pipeline-level kill-and-resume runs in
the slow suite: tests/pipeline/test_sweeps.py.)
"""

from __future__ import annotations

import io
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from recpo.models.backbone import Backbone, load_backbone, load_model, prepare_for_training
from recpo.pipeline import build_datamodule, stage_data_args
from recpo.training.preference import PreferenceModule
from recpo.training.stages import load_best, resume_path
from recpo.training.trainer import make_trainer
from tests.conftest import compose

OVERRIDES = [
    "data.source.synthetic.num_users=40",
    "backbone.finetune=lora",
    "backbone.lora.dropout=0.1",  # random draws in training: resuming restores the generators
    "po.max_train_examples=8",
    "po.batch_size=4",
    "po.num_negatives=3",
    "po.max_epochs=2",
    "eval.max_examples=4",
    "runtime.eval_batch_size=8",
    "logger={}",
    "callbacks={}",
]


class StopInSecondEpoch(L.Callback):
    """Stands in for a killed process: fails at the second epoch's second batch, after
    the first epoch's checkpoint (or, validating twice an epoch, the second epoch's
    mid-epoch one)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("stopped")


class RecordBatches(L.Callback):
    """The training rows of every batch, in order."""

    def __init__(self):
        self.rows: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rows.append(batch["example_index"].tolist())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the pipeline runs the tiny backbone (runtime.torch_threads)
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = compose(OVERRIDES, tmp / "run")
    dm = build_datamodule(cfg, "po")
    ds = dm.load()
    titles, texts = list(ds.catalog.names.values()), dm.tokenizer_texts()

    def policy():
        torch.manual_seed(0)  # the same fresh adapter each time, as in a re-run
        return load_backbone(
            cfg.backbone,
            model_dir=None,
            cache_dir=cfg.paths.cache_dir,
            titles=titles,
            texts=texts,
        )

    dm.set_tokenizer(policy().tokenizer)
    yield cfg, dm, policy, tmp
    torch.set_num_threads(threads)


def module_for(cfg, backbone) -> PreferenceModule:
    return PreferenceModule(
        backbone.model,
        objective=hydra.utils.instantiate(cfg.objective),
        optimizer=hydra.utils.instantiate(cfg.po.optimizer),
        scheduler=hydra.utils.instantiate(cfg.po.scheduler),
        warmup_ratio=cfg.po.warmup_ratio,
        reference="disable_adapter",
    )


def fit(cfg, dm, backbone, out: Path, stop: bool = False, record: RecordBatches | None = None):
    cfg = cfg.copy()
    cfg.paths.output_dir = str(out)
    module = module_for(cfg, backbone)
    trainer = make_trainer(cfg, "po", cfg.po.max_epochs)
    if stop:
        trainer.callbacks.append(StopInSecondEpoch())
    if record is not None:
        trainer.callbacks.append(record)
    trainer.fit(
        module,
        datamodule=dm.for_training(**stage_data_args(cfg, "po")),
        ckpt_path=resume_path(cfg, "po"),
    )
    return module, trainer


def trained(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad}


@pytest.fixture(scope="module")
def uninterrupted(setup):
    cfg, dm, policy, tmp = setup
    return fit(cfg, dm, policy(), tmp / "full")


def test_lora_checkpoint_holds_the_adapter_not_the_base(setup, uninterrupted):
    module, trainer = uninterrupted
    last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    assert set(state) == set(trained(module)) and all("lora_" in k for k in state)
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"] and checkpoint["loops"]
    full = module.state_dict()
    assert set(state) < set(full)

    def nbytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    # The adapter is under 10% of the weights; the file, with Adam's two moments
    # per adapter weight, under a third of the full state dict written alone.
    assert nbytes(state.values()) < 0.10 * nbytes(full.values())
    buffer = io.BytesIO()
    torch.save(full, buffer)
    assert last.stat().st_size < buffer.tell() / 3


def test_lora_run_stopped_and_resumed_ends_like_the_uninterrupted_run(setup, uninterrupted):
    cfg, dm, policy, tmp = setup
    full_module, full_trainer = uninterrupted
    with pytest.raises(RuntimeError, match="stopped"):
        fit(cfg, dm, policy(), tmp / "stopped", stop=True)
    last = tmp / "stopped" / "po" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
    module, trainer = fit(cfg, dm, policy(), tmp / "stopped")  # picks up last.ckpt
    assert trainer.current_epoch == full_trainer.current_epoch == 2
    got, want = trained(module), trained(full_module)
    assert set(got) == set(want)
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6), key
    for key in ("val/hr@1", "val/hr@5", "val/ndcg@5"):
        assert trainer.callback_metrics[key] == pytest.approx(
            full_trainer.callback_metrics[key].item(), abs=1e-6
        )
    assert trainer.checkpoint_callback.best_model_score == pytest.approx(
        full_trainer.checkpoint_callback.best_model_score.item(), abs=1e-6
    )


def test_run_stopped_after_a_mid_epoch_checkpoint_resumes_with_the_epochs_other_batches(setup):
    cfg, dm, policy, tmp = setup
    cfg = cfg.copy()
    cfg.trainer.val_check_interval = 0.5  # validation and last.ckpt after every batch
    full_batches = RecordBatches()
    full_module, full_trainer = fit(cfg, dm, policy(), tmp / "mid-full", record=full_batches)
    first_attempt, resumed = RecordBatches(), RecordBatches()
    with pytest.raises(RuntimeError, match="stopped"):
        fit(cfg, dm, policy(), tmp / "mid-stopped", stop=True, record=first_attempt)
    last = torch.load(tmp / "mid-stopped" / "po" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"batches": 1}
    ]
    module, trainer = fit(cfg, dm, policy(), tmp / "mid-stopped", record=resumed)
    # The resumed attempt trains the second epoch's second batch, not its first again.
    assert len(full_batches.rows) == 4 and first_attempt.rows == full_batches.rows[:3]
    assert resumed.rows == full_batches.rows[3:]
    got, want = trained(module), trained(full_module)
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6), key
    assert trainer.callback_metrics["val/hr@1"] == pytest.approx(
        full_trainer.callback_metrics["val/hr@1"].item(), abs=1e-6
    )


def test_best_checkpoint_loads_into_a_fresh_module(setup, uninterrupted):
    cfg, dm, policy, tmp = setup
    _, trainer = uninterrupted
    best = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    path = policy().path
    torch.manual_seed(1)  # another adapter initialisation
    model = prepare_for_training(load_model(path, cfg.backbone), cfg.backbone, lora=True)
    module = module_for(cfg, Backbone(model, None, path, True))
    frozen = {k: v.clone() for k, v in module.state_dict().items() if k not in best["state_dict"]}
    assert any(not torch.equal(v, best["state_dict"][k]) for k, v in trained(module).items())
    load_best(module, trainer)
    for key, value in trained(module).items():
        assert torch.equal(value, best["state_dict"][key]), key
    for key, value in module.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key


def test_loading_checks_the_trained_parameters(setup, uninterrupted):
    module, trainer = uninterrupted
    last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)["state_dict"]
    module.load_state_dict(state)  # the frozen base is not needed
    dropped = dict(state)
    dropped.pop(next(iter(state)))
    with pytest.raises(RuntimeError, match="1 trained parameters missing"):
        module.load_state_dict(dropped)
    with pytest.raises(RuntimeError, match="1 unknown keys"):
        module.load_state_dict({**state, "model.extra.weight": torch.zeros(1)})
    module.load_state_dict(dropped, strict=False)
