"""The LLM pipeline: data and backbone, then the stages in ``cfg.stages`` (``sft``,
``po``), each followed by evaluation with both protocols.

SFT results are stored under ``paths.sft_dir`` by a content key (:func:`sft_key`),
so a sweep over preference-optimization settings trains SFT once and every later
run reuses it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from recpo.data.datamodule import RecDataModule
from recpo.evaluation.evaluate import evaluate_split
from recpo.models.backbone import Backbone, add_lora, load_backbone, load_model, load_tokenizer
from recpo.models.tiny import content_key
from recpo.training.common import save_pretrained_atomic
from recpo.training.loggers import close_stage_loggers
from recpo.training.preference import PreferenceModule, precompute_reference
from recpo.training.sft import SFTModule
from recpo.training.trainer import is_rank_zero, make_trainer

log = logging.getLogger(__name__)

STAGES = ("sft", "po")
TRAIN_MODES = {"sft": "sft", "po": "preference"}
# The nodes that decide what SFT learns; the SFT key hashes each of them whole ...
SFT_KEY_NODES = ("data", "backbone", "sft", "trainer", "seed", "scoring")
# ... except these keys, which change where files are read from or whether a stored
# result is reused, never the weights. The rows read from the files are hashed
# instead (RecDataModule.rows_key), so the same data in another folder gives the
# same key and other data in the same folder does not.
SFT_KEY_EXCLUDED = ("data.source.data_dir", "data.source.cache_dir", "sft.reuse")
# Everything else is not part of the SFT key: paths, runtime (threads, workers, eval
# batch size, logging cadence), logger, callbacks, eval, po, objective, stages.


def _hashed(cfg: DictConfig, name: str, excluded: tuple[str, ...] = SFT_KEY_EXCLUDED) -> Any:
    """``cfg[name]`` resolved, without the keys of ``excluded`` that lie inside it."""
    node = OmegaConf.select(cfg, name, throw_on_missing=True)
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    for key in excluded:
        head, _, rest = key.partition(".")
        if head != name:
            continue
        parent = value
        *path, leaf = rest.split(".")
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(leaf, None)
    return value


def effective_batch_size(cfg: DictConfig, stage: str) -> int | str:
    """Rows per optimizer step: nodes x devices x batch size x accumulation
    (a description when the device count is not a number, e.g. ``auto``)."""
    t = cfg.trainer
    parts = [t.get("num_nodes", 1), t.devices, cfg[stage].batch_size, t.accumulate_grad_batches]
    if all(isinstance(p, int) and p > 0 for p in parts):
        return parts[0] * parts[1] * parts[2] * parts[3]
    return "x".join(str(p) for p in parts)


def sft_key_parts(cfg: DictConfig, rows: str) -> dict[str, Any]:
    """What the SFT key hashes: the nodes of :data:`SFT_KEY_NODES` (less
    :data:`SFT_KEY_EXCLUDED`), the effective batch size and ``rows``, the content
    key of the training and validation rows the SFT stage uses."""
    parts = {name: _hashed(cfg, name) for name in SFT_KEY_NODES}
    parts["effective_batch_size"] = effective_batch_size(cfg, "sft")
    parts["rows"] = rows
    return parts


def sft_key(cfg: DictConfig, rows: str) -> str:
    """Content key of an SFT result (see :func:`sft_key_parts`)."""
    return content_key(sft_key_parts(cfg, rows))


def sft_eval_key(cfg: DictConfig, rows: str) -> str:
    """Content key of a stored SFT evaluation: the data, the evaluation settings, the
    scoring and ``rows``, the content key of the evaluated rows (inside the SFT
    folder, so the model is fixed too)."""
    return content_key(
        {
            "data": _hashed(cfg, "data"),
            "eval": _hashed(cfg, "eval"),
            "scoring": cfg.scoring,
            "rows": rows,
        }
    )


def sft_folder(cfg: DictConfig, dm: RecDataModule) -> Path:
    """Where the SFT result of ``cfg`` is stored; ``dm`` is the SFT stage's data."""
    backbone = cfg.backbone.get("name") or f"tiny-{cfg.backbone.tokenizer}"
    key = sft_key(cfg, dm.rows_key(("train", "val")))
    return Path(cfg.paths.sft_dir) / f"{cfg.data.source.name}-{backbone}-{key}"


def stage_data_args(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The data module settings of a training stage (``cfg.sft`` / ``cfg.po``)."""
    node = cfg[stage]
    args: dict[str, Any] = dict(
        train_mode=TRAIN_MODES[stage],
        batch_size=node.batch_size,
        max_train_examples=node.max_train_examples,
    )
    if stage == "po":
        args.update(num_negatives=node.num_negatives, resample_negatives=node.resample_negatives)
    return args


def build_datamodule(cfg: DictConfig, stage: str = "sft") -> RecDataModule:
    """The data of ``cfg.data`` with the settings of ``stage``, the evaluation cap and
    the runtime settings (``for_stage`` gives the other stage's over the same rows)."""
    args = stage_data_args(cfg, stage)
    # K is checked against the candidates when the data is built, before any training.
    args.setdefault("num_negatives", cfg.po.num_negatives)
    return hydra.utils.instantiate(
        cfg.data,
        **args,
        max_eval_examples=cfg.eval.max_examples,
        eval_batch_size=cfg.runtime.eval_batch_size,
        num_workers=cfg.runtime.num_workers,
    )


def load_best(module: torch.nn.Module, trainer: Any) -> None:
    """Load the best checkpoint's weights (by the monitored val metric) into ``module``.

    A checkpoint holds the trained parameters only (LoRA: the adapter); the frozen
    weights are those already in ``module`` (see ``LLMStage.load_state_dict``).
    """
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


def po_policy(cfg: DictConfig, sft_path: Path, base: Backbone) -> Backbone:
    """The PO policy: the SFT model (LoRA: merged, with a fresh adapter).

    The random number generators are seeded first, so the fresh adapter and the
    stage's random draws (dropout) do not depend on whether SFT was trained in this
    process or reused: a PO job gives the same result in a sweep's first job, in a
    later one, and in a re-run that resumes it.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return load_sft(cfg, sft_path, base, fresh_adapter=True)


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
    """Preference optimization from the SFT weights against the frozen SFT reference;
    ``dm`` is the PO stage's data."""
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
    model = backbone.model
    if (
        cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto")
        and torch.cuda.is_available()
        and next(model.parameters()).device.type == "cpu"
        and not getattr(model, "is_loaded_in_4bit", False)
    ):
        # Lightning hands the model back on the CPU after fit: evaluate on the GPU.
        model.to("cuda")
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


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def sft_stage(cfg: DictConfig, dm: RecDataModule, base: Backbone) -> tuple[Path, dict[str, float]]:
    """Run SFT (or reuse a stored result with the same content key) and evaluate it.

    Returns:
        The SFT model folder and its metrics (``{}`` on ranks other than 0).
    """
    folder = sft_folder(cfg, dm)
    reuse = cfg.sft.reuse and folder.is_dir()
    if reuse:
        log.info("reusing SFT model %s (content key match)", folder)
    else:
        if folder.exists():
            # sft.reuse=false with a stored result: train again, keep the stored one.
            folder = Path(cfg.paths.output_dir) / "sft_model"
        run_sft(cfg, dm, base, folder)
        if is_rank_zero():
            # What the key was computed from, to tell why a later run did not reuse it.
            _write_json(folder / "sft_key.json", sft_key_parts(cfg, dm.rows_key(("train", "val"))))
    if not is_rank_zero():
        return folder, {}
    Path(cfg.paths.output_dir, "sft_model.txt").write_text(str(folder.resolve()) + "\n")
    # The SFT evaluation is stored with the SFT model, keyed by the evaluated rows and
    # the evaluation settings, and copied into every run folder that uses it.
    rows = dm.rows_key(tuple(cfg.eval.splits))
    eval_dir = folder / f"eval-{sft_eval_key(cfg, rows)}"
    cached = eval_dir / "metrics.json"
    if not cached.is_file():
        model = load_sft(cfg, folder, base, fresh_adapter=False) if reuse else base
        metrics = evaluate(cfg, dm, model, "sft", out=eval_dir)
        _write_json(cached, metrics)
    shutil.copytree(eval_dir, Path(cfg.paths.output_dir) / "eval" / "sft", dirs_exist_ok=True)
    metrics = json.loads(cached.read_text())
    close_stage_loggers(cfg, "sft", metrics)  # a reused SFT result gets its own W&B run too
    return folder, metrics


def run_llm(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.stages`` and evaluate after each; returns the metrics of every stage."""
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown or not cfg.stages:
        raise ValueError(f"stages must be a non-empty list of {STAGES}, got {list(cfg.stages)}")
    if cfg.runtime.get("torch_threads"):
        torch.set_num_threads(cfg.runtime.torch_threads)
    dm = build_datamodule(cfg, "sft")
    dataset = dm.load()
    base = load_backbone(
        cfg.backbone,
        model_dir=cfg.paths.model_dir,
        cache_dir=cfg.paths.cache_dir,
        titles=list(dataset.catalog.names.values()),
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(base.tokenizer, prompt_bos=cfg.backbone.get("prompt_bos", True))
    results: dict[str, dict[str, float]] = {}
    sft_path: Path | None = None
    for stage in cfg.stages:
        if stage == "sft":
            sft_path, results["sft"] = sft_stage(cfg, dm, base)
            continue
        if sft_path is None:
            sft_path = Path(cfg.po.init_from) if cfg.po.get("init_from") else sft_folder(cfg, dm)
            if not sft_path.is_dir():
                raise FileNotFoundError(f"po needs an SFT model at {sft_path}: add 'sft' to stages")
        policy = po_policy(cfg, sft_path, base)
        po_dm = dm.for_stage(**stage_data_args(cfg, "po"))
        run_po(cfg, po_dm, policy)
        if is_rank_zero():
            results["po"] = evaluate(cfg, po_dm, policy, "po")
            close_stage_loggers(cfg, "po", results["po"])
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
