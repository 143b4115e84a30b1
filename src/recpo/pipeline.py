"""The LLM pipeline: data and backbone, then the stages in ``cfg.stages`` (``sft``,
``po``), each followed by evaluation with both protocols.

SFT results are stored under ``paths.sft_dir`` by a content key (data, backbone,
SFT settings, seed), so a sweep over preference-optimization settings trains SFT
once and every later run reuses it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from recpo.data.datamodule import RecDataModule
from recpo.evaluation.evaluate import evaluate_split
from recpo.models.backbone import Backbone, add_lora, load_backbone, load_model, load_tokenizer
from recpo.models.tiny import content_key
from recpo.training.common import save_pretrained_atomic
from recpo.training.preference import PreferenceModule, precompute_reference
from recpo.training.sft import SFTModule
from recpo.training.trainer import is_rank_zero, make_trainer

log = logging.getLogger(__name__)

STAGES = ("sft", "po")
# Data settings that do not change what SFT learns (they only matter for PO or eval).
_NOT_SFT_DATA = (
    "num_negatives",
    "resample_negatives",
    "eval_batch_size",
    "max_eval_examples",
    "num_workers",
)


def load_best(module: torch.nn.Module, trainer: Any) -> None:
    """Load the best checkpoint's weights (by the monitored val metric) into ``module``."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        log.info("loaded best checkpoint %s", best)


def resume_path(cfg: DictConfig, stage: str) -> str | None:
    """The stage's last checkpoint in this run folder, if an earlier attempt left one."""
    last = Path(cfg.paths.output_dir) / stage / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming %s from %s", stage, last)
        return str(last)
    return None


def sft_key(cfg: DictConfig) -> str:
    """Content key of an SFT result: everything that changes the SFT weights (not
    where files live, not PO or evaluation settings)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in _NOT_SFT_DATA:
        data.pop(key, None)
    for key in ("data_dir", "cache_dir"):
        data["source"].pop(key, None)
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    backbone.pop("po_lr", None)
    sft = OmegaConf.to_container(cfg.sft, resolve=True)
    sft.pop("reuse", None)
    trainer = {
        k: cfg.trainer.get(k) for k in ("precision", "accumulate_grad_batches", "gradient_clip_val")
    }
    return content_key(
        data, backbone, sft, trainer, cfg.seed, bool(cfg.trainer.get("fast_dev_run"))
    )


def sft_folder(cfg: DictConfig) -> Path:
    backbone = cfg.backbone.get("name") or f"tiny-{cfg.backbone.tokenizer}"
    return Path(cfg.paths.sft_dir) / f"{cfg.data.source.name}-{backbone}-{sft_key(cfg)}"


def stage_module_args(cfg: DictConfig, stage: str) -> dict[str, Any]:
    node = cfg[stage]
    return dict(
        optimizer=hydra.utils.instantiate(node.optimizer),
        scheduler=hydra.utils.instantiate(node.scheduler) if node.get("scheduler") else None,
        warmup_ratio=node.warmup_ratio,
        scoring=cfg.scoring,
    )


def run_sft(cfg: DictConfig, dm: RecDataModule, backbone: Backbone, target: Path) -> None:
    """Fine-tune on prompt -> target and save the model (LoRA: the adapter) to ``target``."""
    dm.train_mode = "sft"
    module = SFTModule(backbone.model, **stage_module_args(cfg, "sft"))
    trainer = make_trainer(cfg, "sft", cfg.sft.max_epochs)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, "sft"))
    load_best(module, trainer)
    if trainer.is_global_zero:
        save_pretrained_atomic(module.model, backbone.tokenizer, target)
    trainer.strategy.barrier()


def load_sft(cfg: DictConfig, sft_path: Path, base: Backbone, fresh_adapter: bool) -> Backbone:
    """The SFT result as a model.

    Full fine-tuning: the saved SFT model. LoRA: the base weights with the SFT
    adapter; with ``fresh_adapter`` (the PO policy) the SFT adapter is merged into
    the base weights and a new adapter is added, so the reference is the policy with
    its adapter disabled and only one copy of the base weights is held.
    """
    if not base.uses_lora:
        return load_backbone(
            cfg.backbone,
            model_dir=None,
            cache_dir=cfg.paths.cache_dir,
            titles=[],
            texts=[],
            checkpoint=sft_path,
        )
    from peft import PeftModel

    base.model = None  # free the base weights before loading them again
    model = load_model(base.path, cfg.backbone)
    model = PeftModel.from_pretrained(model, sft_path, is_trainable=False)
    if fresh_adapter:
        model = model.merge_and_unload()
        if cfg.backbone.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model = add_lora(model, cfg.backbone.lora)
    return Backbone(model, load_tokenizer(sft_path, cfg.backbone.get("pad_token")), base.path, True)


def reference_mode(cfg: DictConfig, policy: Backbone) -> str:
    """``po.reference``; ``auto`` picks none / disable_adapter / copy."""
    mode = cfg.po.reference
    if mode != "auto":
        return mode
    # Objectives that use a reference model expose `reference_free` (MPPO has none).
    if "reference_free" not in cfg.objective or cfg.objective.reference_free:
        return "none"
    return "disable_adapter" if policy.uses_lora else "copy"


def run_po(cfg: DictConfig, dm: RecDataModule, policy: Backbone) -> None:
    """Preference optimization from the SFT weights against the frozen SFT reference."""
    dm.train_mode = "preference"
    if cfg.po.get("max_train_examples") is not None:
        dm.max_train_examples = cfg.po.max_train_examples
    module = PreferenceModule(
        policy.model,
        objective=hydra.utils.instantiate(cfg.objective),
        reference=reference_mode(cfg, policy),
        **stage_module_args(cfg, "po"),
    )
    if module.reference == "precompute":
        table = precompute_reference(
            module,
            policy.model,
            dm.candidates_dataloader(),
            len(dm.examples("train")),
            dm.num_candidates,
        )
        module.set_reference_table(table)
    trainer = make_trainer(cfg, "po", cfg.po.max_epochs)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path(cfg, "po"))
    load_best(module, trainer)
    if trainer.is_global_zero and cfg.po.save_model:
        save_pretrained_atomic(
            module.model, policy.tokenizer, Path(cfg.paths.output_dir) / "po_model"
        )
    trainer.strategy.barrier()


def evaluate(
    cfg: DictConfig, dm: RecDataModule, backbone: Backbone, tag: str, out: Path | None = None
) -> dict[str, float]:
    """Both protocols on each split in ``cfg.eval.splits``; predictions go to ``out``
    (default: the run folder's ``eval/<tag>``)."""
    metrics: dict[str, float] = {}
    out = out or Path(cfg.paths.output_dir) / "eval" / tag
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
                scoring=cfg.scoring,
                out_dir=out,
            )
        )
    return metrics


def summary_table(results: dict[str, dict[str, float]], split: str = "test") -> str:
    """A small text table: one line per evaluated stage."""
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


def sft_stage(cfg: DictConfig, dm: RecDataModule, base: Backbone) -> tuple[Path, dict[str, float]]:
    """Run SFT (or reuse a stored result with the same content key) and evaluate it.

    Returns:
        The SFT model folder and its metrics (``{}`` on ranks other than 0).
    """
    folder = sft_folder(cfg)
    reuse = cfg.sft.reuse and folder.is_dir()
    if reuse:
        log.info("reusing SFT model %s (content key match)", folder)
    else:
        if folder.exists():
            # sft.reuse=false with a stored result: train again, keep the stored one.
            folder = Path(cfg.paths.output_dir) / "sft_model"
        run_sft(cfg, dm, base, folder)
    if not is_rank_zero():
        return folder, {}
    Path(cfg.paths.output_dir, "sft_model.txt").write_text(str(folder.resolve()) + "\n")
    # The SFT evaluation is stored with the SFT model (keyed by the eval settings too)
    # and copied into every run folder that uses it.
    eval_dir = folder / f"eval-{content_key(OmegaConf.to_container(cfg.eval, resolve=True))}"
    cached = eval_dir / "metrics.json"
    if not cached.is_file():
        model = load_sft(cfg, folder, base, fresh_adapter=False) if reuse else base
        metrics = evaluate(cfg, dm, model, "sft", out=eval_dir)
        tmp = cached.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(cached)
    shutil.copytree(eval_dir, Path(cfg.paths.output_dir) / "eval" / "sft", dirs_exist_ok=True)
    return folder, json.loads(cached.read_text())


def run_llm(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.stages`` and evaluate after each; returns the metrics of every stage."""
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown or not cfg.stages:
        raise ValueError(f"stages must be a non-empty list of {STAGES}, got {list(cfg.stages)}")
    if cfg.backbone.get("torch_threads"):
        torch.set_num_threads(cfg.backbone.torch_threads)
    dm: RecDataModule = hydra.utils.instantiate(cfg.data)
    dataset = dm.load()
    base = load_backbone(
        cfg.backbone,
        model_dir=cfg.paths.model_dir,
        cache_dir=cfg.paths.cache_dir,
        titles=list(dataset.catalog.names.values()),
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(base.tokenizer)
    results: dict[str, dict[str, float]] = {}
    sft_path: Path | None = None
    for stage in cfg.stages:
        if stage == "sft":
            sft_path, results["sft"] = sft_stage(cfg, dm, base)
            continue
        if sft_path is None:
            sft_path = Path(cfg.po.init_from) if cfg.po.get("init_from") else sft_folder(cfg)
            if not sft_path.is_dir():
                raise FileNotFoundError(f"po needs an SFT model at {sft_path}: add 'sft' to stages")
        policy = load_sft(cfg, sft_path, base, fresh_adapter=True)
        run_po(cfg, dm, policy)
        if is_rank_zero():
            results["po"] = evaluate(cfg, dm, policy, "po")
    if not is_rank_zero():
        return {}
    final = results[cfg.stages[-1]]
    metrics = {**final, **{f"{tag}:{k}": v for tag, m in results.items() for k, v in m.items()}}
    split = "test" if "test" in cfg.eval.splits else cfg.eval.splits[-1]
    names = {"sft": "SFT", "po": cfg.objective._target_.rsplit(".", 1)[-1]}
    shown = {names[tag]: m for tag, m in results.items()}
    print(
        "\n" + summary_table(shown, split) + f"\n(random HitRatio@1 = {1 / dm.num_candidates:.3f})"
    )
    print(f"run folder: {cfg.paths.output_dir}")
    return metrics
