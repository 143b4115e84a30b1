"""The tiny backbone goes through the same Auto* path as real checkpoints."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from recpo.errors import BackboneError
from recpo.models.backbone import load_backbone, resolve_checkpoint
from recpo.models.tiny import build_bpe_tokenizer, build_tiny_backbone

TITLES = ["Glee Cast", "Glee", "Air", "Café Del Mar", "Ke$ha", ":wumpscut:"]
TEXTS = ["This user has listened to Glee, Air in the past. Candidates: Muse, Ke$ha. Answer:"]


def test_tiny_checkpoint_is_cached_and_loads_via_auto(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    a = build_tiny_backbone(tmp_path, TITLES, TEXTS)
    assert build_tiny_backbone(tmp_path, TITLES, TEXTS) == a  # reused
    assert build_tiny_backbone(tmp_path, TITLES + ["New"], TEXTS) != a  # content-keyed
    model = AutoModelForCausalLM.from_pretrained(a)
    tok = AutoTokenizer.from_pretrained(a)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == len(tok)
    for t in TITLES:
        ids = tok(" " + t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.decode(ids).strip() == t
    # Longest title wins inside text.
    ids = tok("played Glee Cast, Glee", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[1:] == ["Glee Cast", ",", "Glee"]


def test_bpe_tokenizer_round_trips_text():
    tok = build_bpe_tokenizer(TITLES, TEXTS * 20, vocab_size=400)
    text = " Café Del Mar, Ke$ha"
    assert tok.decode(tok.encode(text).ids) == text
    assert len(tok.encode(" Café Del Mar").ids) > 1


def test_missing_pretrained_folder_names_what_to_set(tmp_path):
    cfg = OmegaConf.create({"kind": "pretrained", "name": "Llama-2-7b-hf"})
    with pytest.raises(BackboneError, match="RECPO_MODEL_DIR"):
        resolve_checkpoint(cfg, None, str(tmp_path), [], [])
    with pytest.raises(BackboneError, match="no checkpoint at .*Llama-2-7b-hf"):
        resolve_checkpoint(cfg, str(tmp_path), str(tmp_path), [], [])


def test_pretrained_path_with_lora_and_pad_token(tmp_path):
    """A local 'pretrained' folder loads with LoRA on all projections and the family pad token."""
    path = build_tiny_backbone(tmp_path, TITLES, TEXTS)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-llama").symlink_to(path)
    cfg = OmegaConf.load("conf/backbone/llama2_7b.yaml").backbone
    cfg.name, cfg.dtype, cfg.gradient_checkpointing = "tiny-llama", "float32", False
    bb = load_backbone(
        cfg, model_dir=str(tmp_path / "models"), cache_dir=str(tmp_path), titles=[], texts=[]
    )
    assert bb.uses_lora and bb.tokenizer.padding_side == "left"
    trainable = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(proj in n for n in trainable), proj
    out = bb.model(input_ids=torch.tensor([[1, 5, 6]]))
    assert out.logits.shape[-1] == len(bb.tokenizer)
