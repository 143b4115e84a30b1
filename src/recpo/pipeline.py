"""The LLM pipeline, the paper's steps in order: data -> backbone -> SFT (or a stored
SFT result with the same content key, :mod:`recpo.training.sft_cache`) -> preference
optimization from the SFT weights -> evaluation with both protocols after each stage.

``cfg.stages`` names the stages to run (``[sft]``, ``[sft, po]`` or ``[po]`` from
``po.init_from``). Every stage writes into the run folder; ``run_llm`` returns the
metrics of every stage (``results.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from recpo.data.datamodule import RecDataModule
from recpo.errors import ConfigError
from recpo.evaluation.evaluate import evaluate_model, summary_table
from recpo.models.backbone import Backbone, load_backbone, load_finetuned
from recpo.ranks import is_rank_zero, rank_zero_decides
from recpo.training.distributed import join_launcher_ranks
from recpo.training.loggers import close_stage_loggers
from recpo.training.sft_cache import (
    sft_eval_key,
    sft_folder,
    sft_key_lock,
    sft_key_parts,
    write_json,
)
from recpo.training.stages import fit_po, fit_sft

log = logging.getLogger(__name__)

STAGES = ("sft", "po")
STAGE_LISTS = (["sft"], ["po"], ["sft", "po"])
TRAIN_MODES = {"sft": "sft", "po": "preference"}


def stage_data_args(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The data module settings of a training stage (``cfg.sft`` / ``cfg.po``)."""
    node = cfg[stage]
    args: dict[str, Any] = dict(
        train_mode=TRAIN_MODES[stage],
        batch_size=node.batch_size,
        max_train_examples=node.max_train_examples,
    )
    if stage == "po":
        args.update(
            num_negatives=node.num_negatives,
            resample_negatives=node.resample_negatives,
            train_seed=node.seed,
        )
    return args


def build_datamodule(cfg: DictConfig, stage: str = "sft") -> RecDataModule:
    """The data of ``cfg.data`` with the settings of ``stage``, the evaluation cap and
    the runtime settings (``for_training`` gives the other stage's over the same rows)."""
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


def load_base(cfg: DictConfig, dm: RecDataModule) -> Backbone:
    """The backbone of ``cfg.backbone`` before training (a tiny one is built for the
    titles and prompts of ``dm``), with ``dm`` set to tokenize with it."""
    dataset = dm.load()
    base = load_backbone(
        cfg.backbone,
        model_dir=cfg.paths.model_dir,
        cache_dir=cfg.paths.cache_dir,
        titles=list(dataset.catalog.names.values()),
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(base.tokenizer, prompt_bos=cfg.backbone.get("prompt_bos", True))
    return base


WEIGHTS_DIGEST = "weights.sha256"


def weights_digest(folder: Path) -> str:
    """SHA-256 over the weight files of a saved model folder (``*.safetensors``,
    ``*.bin``, by name): equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def restore_sft_evaluation(root: str | Path | None, folder: Path, eval_dir: Path) -> bool:
    """Copy a stored evaluation of the SFT model ``folder`` from ``root`` (the setting
    ``paths.sft_evals``: folders laid out like the SFT cache, ``<model folder
    name>/<eval-key>/`` with ``metrics.json``, without the weights) into ``eval_dir``.

    The model folder's name holds its content key and the evaluation folder's name
    the evaluated rows and settings, so a stored evaluation is the one this model
    would give again, where training is deterministic; a model retrained after its
    cache was lost skips re-evaluating. Floats are not portable between CPU kinds, so
    a stored ``weights.sha256`` (:func:`weights_digest` of the evaluated model) must
    equal the retrained model's, else the model is evaluated; the retrained model's
    digest is logged either way. Returns whether one was copied (written through a
    temporary folder, one rename)."""
    if not root:
        return False
    source = Path(root) / folder.name / eval_dir.name
    if not (source / "metrics.json").is_file():
        log.info("no stored evaluation of %s at %s: evaluating", folder.name, source)
        return False
    digest = weights_digest(folder)
    log.info("SFT model %s: weights sha256 %s", folder.name, digest)
    stored = source / WEIGHTS_DIGEST
    evaluated = stored.read_text().split()[0] if stored.is_file() else digest
    if evaluated != digest:
        log.warning(
            "the evaluation at %s is of other weights (sha256 %s): evaluating this model",
            source,
            evaluated,
        )
        return False
    tmp = eval_dir.with_name(eval_dir.name + ".restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, eval_dir)
    log.info("SFT evaluation %s restored from %s (not recomputed)", eval_dir.name, source)
    return True


def sft_evaluation(
    cfg: DictConfig, dm: RecDataModule, base: Backbone, folder: Path, eval_dir: Path, reuse: bool
) -> dict[str, float]:
    """The SFT model's evaluation stored in ``eval_dir`` (inside the model's folder),
    computed when missing. Returns its metrics (``{}`` off rank 0)."""
    cached = eval_dir / "metrics.json"
    if is_rank_zero() and not cached.is_file():
        restore_sft_evaluation(cfg.paths.get("sft_evals"), folder, eval_dir)
    if rank_zero_decides(not cached.is_file()):
        model = load_finetuned(cfg.backbone, folder, base, fresh_adapter=False) if reuse else base
        metrics = evaluate_model(cfg, model.model, model.tokenizer, dm, eval_dir)
        if is_rank_zero():
            write_json(cached, metrics)
    return json.loads(cached.read_text()) if is_rank_zero() else {}


def sft_stage(cfg: DictConfig, dm: RecDataModule, base: Backbone) -> tuple[Path, dict[str, float]]:
    """SFT (or a stored result with the same content key) and its evaluation, which is
    stored with the model, keyed by the evaluated rows and settings, and copied into
    the run folder. Returns the SFT model folder and its metrics (``{}`` off rank 0).

    Jobs started together with the same key take turns through the key's lock (rank 0
    holds it): the first trains and evaluates, the others wait and then reuse both;
    nobody reads a model or an evaluation before it is complete.
    """
    stored = sft_folder(cfg, dm)
    eval_name = f"eval-{sft_eval_key(cfg, dm.rows_key(tuple(cfg.eval.splits)))}"
    done = cfg.sft.reuse and (stored / eval_name / "metrics.json").is_file()
    own_copy = not cfg.sft.reuse and stored.is_dir()  # trains into the run folder
    lock = nullcontext()
    if is_rank_zero() and not (done or own_copy):
        timeout = cfg.runtime.get("sft_lock_timeout")
        lock = sft_key_lock(stored, timeout, run_dir=str(cfg.paths.output_dir))
    with lock:
        # Decided under the lock: another job may have stored this model meanwhile.
        reuse = rank_zero_decides(bool(cfg.sft.reuse and stored.is_dir()))
        folder = stored
        if reuse:
            log.info("reusing SFT model %s (content key match)", folder)
        else:
            if rank_zero_decides(stored.exists()):
                # sft.reuse=false with a stored result: train again, keep the stored one.
                folder = Path(cfg.paths.output_dir) / "sft_model"
            fit_sft(cfg, dm, base, folder)
            if is_rank_zero():
                write_json(
                    folder / "sft_key.json", sft_key_parts(cfg, dm.rows_key(("train", "val")))
                )
        metrics = sft_evaluation(cfg, dm, base, folder, folder / eval_name, reuse)
    if not is_rank_zero():
        return folder, {}
    Path(cfg.paths.output_dir, "sft_model.txt").write_text(str(folder.resolve()) + "\n")
    shutil.copytree(
        folder / eval_name, Path(cfg.paths.output_dir) / "eval" / "sft", dirs_exist_ok=True
    )
    close_stage_loggers(cfg, "sft", metrics)  # a reused SFT result gets its own W&B run too
    return folder, metrics


def po_policy(cfg: DictConfig, sft_path: Path, base: Backbone) -> Backbone:
    """The PO policy: the SFT model (LoRA: merged, with a fresh adapter).

    The random number generators are seeded first, so the fresh adapter and the
    stage's random draws (dropout) do not depend on whether SFT was trained in this
    process or reused: a PO job gives the same result in a sweep's first job, in a
    later one, and in a re-run that resumes it. The stage's seed is ``po.seed`` (the
    run seed unless set), so PO seeds can share one SFT model.
    """
    L.seed_everything(cfg.po.seed, workers=True, verbose=False)
    return load_finetuned(cfg.backbone, sft_path, base, fresh_adapter=True)


def po_stage(cfg: DictConfig, dm: RecDataModule, base: Backbone, sft_path: Path | None) -> dict:
    """Preference optimization from the SFT model and its evaluation (``{}`` off rank 0)."""
    if sft_path is None:
        sft_path = Path(cfg.po.init_from) if cfg.po.get("init_from") else sft_folder(cfg, dm)
        if not sft_path.is_dir():
            raise FileNotFoundError(f"po needs an SFT model at {sft_path}: add 'sft' to stages")
    policy = po_policy(cfg, sft_path, base)
    po_dm = dm.for_training(**stage_data_args(cfg, "po"))
    fit_po(cfg, po_dm, policy)
    out = Path(cfg.paths.output_dir) / "eval" / "po"
    metrics = evaluate_model(cfg, policy.model, policy.tokenizer, po_dm, out)  # every rank
    if not is_rank_zero():
        return {}
    close_stage_loggers(cfg, "po", metrics)
    return metrics


def run_llm(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.stages`` and evaluate after each; returns the metrics of every stage."""
    if list(cfg.stages) not in STAGE_LISTS:
        raise ConfigError(f"stages must be one of {STAGE_LISTS}, got {list(cfg.stages)}")
    if cfg.runtime.get("torch_threads"):
        torch.set_num_threads(cfg.runtime.torch_threads)
    join_launcher_ranks(cfg.trainer.accelerator, cfg.runtime.get("sft_lock_timeout"))
    dm = build_datamodule(cfg, "sft")
    base = load_base(cfg, dm)
    results: dict[str, dict[str, float]] = {}
    sft_path: Path | None = None
    if "sft" in cfg.stages:
        sft_path, results["sft"] = sft_stage(cfg, dm, base)
    if "po" in cfg.stages:
        results["po"] = po_stage(cfg, dm, base, sft_path)
    if not is_rank_zero():
        return {}
    final = results[cfg.stages[-1]]
    metrics = {**final, **{f"{tag}:{k}": v for tag, m in results.items() for k, v in m.items()}}
    split = "test" if "test" in cfg.eval.splits else cfg.eval.splits[-1]
    names = {"sft": "SFT", "po": cfg.objective._target_.rsplit(".", 1)[-1]}
    table = summary_table({names[tag]: m for tag, m in results.items()}, split)
    print(
        f"\n{table}\n(candidates={cfg.data.candidates}; "
        f"random HitRatio@1 = {1 / dm.num_candidates:.3f})"
    )
    print(f"run folder: {cfg.paths.output_dir}")
    return metrics
