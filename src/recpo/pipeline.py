"""The LLM pipeline: load data and backbone, run the configured stages, evaluate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from recpo.data.datamodule import RecDataModule
from recpo.evaluation.evaluate import evaluate_split
from recpo.models.backbone import Backbone, load_backbone
from recpo.training.common import save_pretrained_atomic
from recpo.training.sft import SFTModule
from recpo.training.trainer import make_trainer

log = logging.getLogger(__name__)


def load_best(module: torch.nn.Module, trainer: Any) -> None:
    """Load the best checkpoint's weights (by the monitored val metric) into ``module``."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        log.info("loaded best checkpoint %s", best)


def run_sft(cfg: DictConfig, dm: RecDataModule, backbone: Backbone) -> Path:
    """Fine-tune on prompt -> target and save the model folder; returns its path."""
    dm.train_mode = "sft"
    module = SFTModule(
        backbone.model,
        optimizer=hydra.utils.instantiate(cfg.sft.optimizer),
        scheduler=hydra.utils.instantiate(cfg.sft.scheduler) if cfg.sft.get("scheduler") else None,
        warmup_ratio=cfg.sft.warmup_ratio,
        scoring=cfg.sft.scoring,
    )
    trainer = make_trainer(cfg, "sft", cfg.sft.max_epochs)
    trainer.fit(module, datamodule=dm)
    load_best(module, trainer)
    return save_pretrained_atomic(
        module.model, backbone.tokenizer, Path(cfg.paths.output_dir) / "sft_model"
    )


def evaluate(cfg: DictConfig, dm: RecDataModule, backbone: Backbone, tag: str) -> dict[str, float]:
    """Both protocols on each split in ``cfg.eval.splits``; predictions go to the run folder."""
    metrics: dict[str, float] = {}
    out = Path(cfg.paths.output_dir) / "eval" / tag
    for split in cfg.eval.splits:
        metrics.update(
            evaluate_split(
                backbone.model,
                backbone.tokenizer,
                dm.eval_dataloader(split),
                split,
                protocols=tuple(cfg.eval.protocols),
                max_new_tokens=cfg.eval.max_new_tokens,
                matcher=cfg.eval.matcher,
                scoring=cfg.sft.scoring,
                out_dir=out,
            )
        )
    return metrics


def summary_table(results: dict[str, dict[str, float]], split: str = "test") -> str:
    """A small text table: one line per evaluated model."""
    cols = [
        ("gen_hr@1", "HitRatio@1"),
        ("valid_ratio", "ValidRatio"),
        ("hr@1", "rank HR@1"),
        ("hr@5", "rank HR@5"),
        ("ndcg@5", "rank NDCG@5"),
    ]
    lines = [f"{split:<10}" + "".join(f"{title:>13}" for _, title in cols)]
    for tag, metrics in results.items():
        cells = "".join(
            f"{metrics[f'{split}/{key}']:>13.4f}" if f"{split}/{key}" in metrics else f"{'-':>13}"
            for key, _ in cols
        )
        lines.append(f"{tag:<10}{cells}")
    return "\n".join(lines)


def run_llm(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.stages`` (currently ``sft``) and evaluate the result."""
    dm: RecDataModule = hydra.utils.instantiate(cfg.data)
    dataset = dm.load()
    titles = list(dataset.catalog.names.values())
    backbone = load_backbone(
        cfg.backbone,
        model_dir=cfg.paths.model_dir,
        cache_dir=cfg.paths.cache_dir,
        titles=titles,
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(backbone.tokenizer)
    results: dict[str, dict[str, float]] = {}
    for stage in cfg.stages:
        if stage != "sft":
            raise ValueError(f"unknown stage {stage!r} in stages; expected sft")
        run_sft(cfg, dm, backbone)
        results[stage] = evaluate(cfg, dm, backbone, stage)
    final = results[cfg.stages[-1]]
    metrics = {**final, **{f"{tag}:{k}": v for tag, m in results.items() for k, v in m.items()}}
    split = "test" if "test" in cfg.eval.splits else cfg.eval.splits[-1]
    print(
        "\n"
        + summary_table(results, split)
        + f"\n(random HitRatio@1 = {1 / dm.num_candidates:.3f})"
    )
    print(f"run folder: {cfg.paths.output_dir}")
    return metrics
