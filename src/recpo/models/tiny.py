"""The embedded default backbone: a small Llama built from a config, with a tokenizer
trained on the dataset's own text.

Both are written with ``save_pretrained`` into a cache folder keyed by their
content and then loaded through ``AutoTokenizer`` / ``AutoModelForCausalLM``,
exactly like a real checkpoint.

Two tokenizers:

* ``title`` (default): word-level over the prompt text, plus one token per item
  title. A recommendation is then a single token, which a 2-layer model learns in
  minutes on a CPU; titles still decode to their text, so generation-based
  evaluation works unchanged.
* ``bpe``: byte-level BPE trained on prompts and titles, giving the token lengths a
  real LLM tokenizer gives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]


def _word_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def build_title_tokenizer(titles: list[str], texts: Iterable[str]) -> Tokenizer:
    """Word-level tokenizer over ``texts`` with every title as one token.

    Titles are added tokens: they are matched (longest first) before the text is
    split into words, so a title inside a prompt becomes exactly one token.
    """
    pre = _word_pre_tokenizer()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in string.punctuation + string.digits:
        vocab.setdefault(ch, len(vocab))
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS])
    tok.add_tokens([AddedToken(t, single_word=True, normalized=False) for t in titles])
    return tok


def build_bpe_tokenizer(
    titles: list[str], texts: Iterable[str], vocab_size: int = 8000
) -> Tokenizer:
    """Byte-level BPE trained on ``texts`` and ``titles``."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*texts, *(" " + t for t in titles)]
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def to_hf_tokenizer(tok: Tokenizer):
    """Wrap a ``tokenizers.Tokenizer`` as the tiny backbone saves it (left padding)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
    )


def content_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (used for cache folders)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_tiny_backbone(
    cache_dir: str | Path,
    titles: list[str],
    texts: list[str],
    tokenizer: str = "title",
    bpe_vocab_size: int = 8000,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_position_embeddings: int = 1024,
    seed: int = 0,
) -> Path:
    """Build (or reuse) the tiny checkpoint folder and return its path.

    Args:
        cache_dir: Root of the cache; the checkpoint goes to
            ``cache_dir/backbones/tiny-<key>`` where the key hashes every input.
        titles: Item titles (each becomes one token with ``tokenizer="title"``).
        texts: Text the tokenizer is built from (filled prompt templates).
        tokenizer: ``"title"`` or ``"bpe"``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if tokenizer not in ("title", "bpe"):
        raise ValueError(f"backbone.tokenizer must be 'title' or 'bpe', got {tokenizer!r}")
    arch = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
    )
    key = content_key(
        tokenizer, bpe_vocab_size if tokenizer == "bpe" else None, titles, texts, arch, seed
    )
    out = Path(cache_dir) / "backbones" / f"tiny-{tokenizer}-{key}"
    if (out / "config.json").is_file():
        return out
    if tokenizer == "title":
        tok = build_title_tokenizer(titles, texts)
    else:
        tok = build_bpe_tokenizer(titles, texts, bpe_vocab_size)
    hf_tok = to_hf_tokenizer(tok)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        **arch,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # Write into a temporary folder and rename, so a half-written checkpoint is never reused.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        hf_tok.save_pretrained(tmp)
        model.save_pretrained(tmp)
        os.replace(tmp, out)
    except OSError:
        if (out / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    return out
