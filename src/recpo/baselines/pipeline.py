"""The baseline task: ``python -m recpo.train +experiment=lastfm_sasrec``.

A baseline with a ``scorer`` (``conf/baseline/list_oracle.yaml``) is model-free: it
scores each val/test row's candidates without training (:func:`run_scorer`). Otherwise it
builds the data (``cfg.data``, the same rows and candidates as the LLM models), the
model (``cfg.baseline.model``) and a Lightning Trainer (``cfg.trainer`` with the
baseline's epochs), trains with early stopping on ``cfg.baseline.monitor``, reloads
the best epoch, evaluates val and test and writes into ``cfg.paths.output_dir``:

* ``baseline_summary.json``: the metrics plus best epoch, row counts, parameters, time;
* ``checkpoints/best-epoch=NNN.ckpt``: the best weights;
* ``encoder/`` (when ``cfg.baseline.export_encoder``): see :mod:`recpo.baselines.export`;
* ``logs/``: the CSV (or W&B) logs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from recpo.baselines.data import SequenceDataModule, history_prefixes
from recpo.baselines.export import save_encoder
from recpo.baselines.module import BaselineModule
from recpo.evaluation.metrics import ranking_metrics
from recpo.training.loggers import close_stage_loggers
from recpo.training.trainer import make_trainer

log = logging.getLogger(__name__)
STAGE = "baseline"  # the W&B run's job type


def make_baseline_trainer(cfg: DictConfig, out: Path) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Trainer with the baseline's epochs, clipping, early stopping and checkpoint."""
    b = cfg.baseline
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best-{epoch:03d}",
        monitor=b.monitor,
        mode="max",
        save_top_k=1,
        save_weights_only=True,
    )
    # CSV in logs/version_N; with logger=wandb its own run (job type "baseline").
    trainer = make_trainer(
        cfg,
        STAGE,
        b.max_epochs,
        checkpoint,
        extra_callbacks=[EarlyStopping(monitor=b.monitor, mode="max", patience=b.patience)],
        csv_version=None,
        root=out,
        gradient_clip_val=b.gradient_clip_val,
    )
    return trainer, checkpoint


def run_scorer(cfg: DictConfig) -> dict[str, float]:
    """Evaluate the model-free scorer ``cfg.baseline.scorer`` on ``cfg.data``'s val and
    test rows with the ranking metrics of the trained baselines (ties count against it).

    The scorer is called as ``scorer(rows=..., catalog=..., train=...)`` and returns
    scores ``(B, C)``; ``train`` holds the training rows plus the history prefixes of
    ``cfg.baseline.prefix_splits``. Writes ``baseline_summary.json`` with, per split, the
    share of rows whose top score is held by one candidate only (``unique_top``) and the
    share where some candidate scores above 0 (``scored_rows``).
    """
    b = cfg.baseline
    started = time.time()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = hydra.utils.instantiate(cfg.data)
    source.load()
    train = list(source.examples("train"))
    for split in b.get("prefix_splits") or []:
        train += history_prefixes(source.examples(split), b.get("min_prefix_length", 1))
    scorer = hydra.utils.instantiate(b.scorer)
    metrics: dict[str, float] = {}
    unique_top: dict[str, float] = {}
    scored: dict[str, float] = {}
    status = "failed"
    try:
        for split in ("val", "test"):
            rows = source.examples(split)
            scores = scorer(rows=rows, catalog=source.catalog, train=train)
            target_index = torch.tensor([ex.candidates.index(ex.target) for ex in rows])
            for metric, per_row in ranking_metrics(scores, target_index).items():
                metrics[f"{split}/{metric}"] = per_row.mean().item()
            best = scores.max(dim=1, keepdim=True).values
            unique_top[split] = ((scores == best).sum(dim=1) == 1).double().mean().item()
            scored[split] = (best.squeeze(1) > 0).double().mean().item()
        status = "success"
    finally:
        close_stage_loggers(cfg, STAGE, metrics, failed=status != "success")
    summary: dict[str, Any] = {
        "task_name": cfg.task_name,
        "model": str(b.scorer._target_).rsplit(".", 1)[-1],
        "dataset": cfg.data.source.name,
        "candidates": cfg.data.candidates,
        "seed": cfg.seed,
        "metrics": metrics,
        "unique_top": unique_top,
        "scored_rows": scored,
        "train_rows": len(train),
        "val_rows": len(source.examples("val")),
        "test_rows": len(source.examples("test")),
        "num_items": len(source.catalog),
        "seconds": round(time.time() - started, 1),
        "baseline": OmegaConf.to_container(b, resolve=True),
    }
    (out / "baseline_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(
        f"\n{cfg.task_name} (candidates={cfg.data.candidates}): "
        + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        + f"\nrun folder: {out}"
    )
    return metrics


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and evaluate ``cfg.baseline`` on ``cfg.data`` (or, for a baseline with a
    ``scorer``, evaluate it without training: :func:`run_scorer`).

    Returns:
        Flat metrics: ``val/hr@1``, ``val/hr@5``, ``val/ndcg@5`` and the same for ``test``.
    """
    b = cfg.baseline
    if b.get("scorer") is not None:
        return run_scorer(cfg)
    started = time.time()
    if b.get("num_threads"):
        # These models are tiny: one thread is about as fast and leaves the other cores free.
        torch.set_num_threads(b.num_threads)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = SequenceDataModule(
        hydra.utils.instantiate(cfg.data),
        max_history=b.max_history,
        batch_size=b.batch_size,
        eval_batch_size=b.eval_batch_size,
        seed=cfg.seed,
        prefix_splits=list(b.prefix_splits),
        min_prefix_length=b.min_prefix_length,
    )
    data.setup()
    model = hydra.utils.instantiate(b.model, num_items=data.num_items, max_len=b.max_history)
    module = BaselineModule(
        model, hydra.utils.instantiate(b.optimizer), loss=b.loss, num_negatives=b.num_negatives
    )

    trainer, checkpoint = make_baseline_trainer(cfg, out)
    status = "failed"
    metrics: dict[str, float] = {}
    try:
        trainer.fit(module, datamodule=data)
        best_epoch = None
        if checkpoint.best_model_path:  # empty under fast_dev_run
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            best_epoch = int(state["epoch"])
            log.info("best epoch %d (%s)", best_epoch, checkpoint.best_model_path)
        metrics.update(trainer.validate(module, datamodule=data, verbose=False)[0])
        metrics.update(trainer.test(module, datamodule=data, verbose=False)[0])
        metrics = {k: float(v) for k, v in sorted(metrics.items())}
        status = "success"
    finally:
        # Close the loggers (a W&B run, the CSV file) even when training fails.
        for logger in trainer.loggers:
            logger.finalize(status)
        # The W&B run gets the evaluation in its summary and is finished.
        close_stage_loggers(cfg, STAGE, metrics, failed=status != "success")

    summary: dict[str, Any] = {
        "task_name": cfg.task_name,
        "model": type(model).__name__,
        "dataset": cfg.data.source.name,
        "candidates": cfg.data.candidates,
        "seed": cfg.seed,
        "metrics": metrics,
        "best_epoch": best_epoch,
        "epochs_run": trainer.current_epoch,
        "train_rows": data.num_train_rows,
        "prefix_rows": data.num_prefix_rows,
        "prefix_splits": list(b.prefix_splits),
        "val_rows": len(data.datasets["val"]),
        "test_rows": len(data.datasets["test"]),
        "num_items": data.num_items,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.time() - started, 1),
        "baseline": OmegaConf.to_container(b, resolve=True),
    }
    (out / "baseline_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    if b.export_encoder:
        save_encoder(
            model,
            data.item_ids,
            out / "encoder",
            info={k: summary[k] for k in ("task_name", "dataset", "seed", "metrics", "best_epoch")},
        )
    print(
        f"\n{cfg.task_name} (candidates={cfg.data.candidates}): test HR@1 {metrics.get('test/hr@1', float('nan')):.4f}  "
        f"HR@5 {metrics.get('test/hr@5', float('nan')):.4f}  NDCG@5 {metrics.get('test/ndcg@5', float('nan')):.4f}  "
        f"(best epoch {best_epoch}, random HR@1 = {1 / data.num_candidates:.3f})\nrun folder: {out}"
    )
    return metrics
