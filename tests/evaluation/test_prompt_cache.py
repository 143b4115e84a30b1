"""Generation that continues from the ranking forward's prompt keys and values.

With both protocols and shared scoring, :func:`evaluate_split` runs each prompt through
the model once: the packed ranking forward stores the prompt's keys and values and
greedy decoding starts from them. Checked against decoding from scratch (the slow
path): the same tokens, the same metrics and predictions, and fewer tokens through
the model.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import DynamicCache

import recpo.evaluation.evaluate as evaluate
from recpo.data.batches import Collator
from recpo.evaluation.evaluate import evaluate_split, prompt_cache_for
from recpo.models.scoring import cache_argument, left_align, score_answers_shared
from tests.evaluation.test_evaluate import BATCH, _examples, _tokenizer
from tests.models.test_scoring import LORA_TARGETS, random_batch, single_thread, tiny_causal_lm

__all__ = ["single_thread"]  # the module fixture: one torch thread

NEW_TOKENS = 6


def _generate(model, ids, mask, cache=None):
    extra = {} if cache is None else {cache_argument(model): cache}
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
        **extra,
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_decoding_from_the_ranking_cache_equals_decoding_from_scratch(arch, attn, padding_side):
    model = tiny_causal_lm(arch, attn).eval()
    prompt_ids, prompt_mask, answer_ids, answer_mask = random_batch(5, 9, 6, 4, padding_side)
    cache = DynamicCache()
    with torch.no_grad():
        cached_scores = score_answers_shared(
            model, prompt_ids, prompt_mask, answer_ids, answer_mask, prompt_cache=cache
        )
        plain_scores = score_answers_shared(model, prompt_ids, prompt_mask, answer_ids, answer_mask)
        assert cache.get_seq_length() == prompt_ids.shape[1] - 1
        ids, mask = left_align(prompt_ids, prompt_mask)
        from_cache = _generate(model, ids, mask, cache)
        from_scratch = _generate(model, ids, mask)
    assert torch.equal(cached_scores.logps, plain_scores.logps)
    assert torch.equal(from_cache, from_scratch)
    assert from_cache.shape[1] == ids.shape[1] + NEW_TOKENS


def test_cached_keys_are_those_of_a_prompt_only_forward():
    """The kept columns hold the prompt's real tokens' keys and values as a forward of
    the left-aligned prompt alone computes them (pad columns are masked anyway)."""
    model = tiny_causal_lm("llama", "sdpa").eval()
    prompt_ids, prompt_mask, answer_ids, answer_mask = random_batch(4, 8, 5, 3, "right")
    cache = DynamicCache()
    with torch.no_grad():
        score_answers_shared(model, prompt_ids, prompt_mask, answer_ids, answer_mask, cache)
        ids, mask = left_align(prompt_ids, prompt_mask)
        ids, mask = ids[:, :-1], mask[:, :-1]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers them
        alone = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    real = mask.bool()
    for layer in range(model.config.num_hidden_layers):
        for got, want in zip(_layer_kv(cache, layer), _layer_kv(_cache_of(alone), layer)):
            # (B, heads, P - 1, head_dim): compare the real columns.
            got, want = got.transpose(1, 2)[real], want.transpose(1, 2)[real]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _cache_of(output):
    return output.cache if hasattr(output, "cache") else output.past_key_values


def _layer_kv(cache, layer):
    entry = cache.layers[layer]
    return entry.keys, entry.values


def test_decoding_from_the_cache_through_lora():
    model = tiny_causal_lm("llama", "sdpa")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0)
    model = get_peft_model(model, config)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter change the model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    batch = random_batch(4, 7, 5, 3, "left", seed=3)
    cache = DynamicCache()
    with torch.no_grad():
        score_answers_shared(model, *batch, prompt_cache=cache)
        ids, mask = left_align(batch[0], batch[1])
        assert torch.equal(_generate(model, ids, mask, cache), _generate(model, ids, mask))
        with model.disable_adapter():
            base = _generate(model, ids, mask)
    assert not torch.equal(base, _generate(model, ids, mask))  # the adapter matters


def test_evaluate_split_runs_each_prompt_once_with_the_same_results(tmp_path, monkeypatch):
    tok = _tokenizer()
    collator = Collator(tok)
    examples = _examples()
    batches = [collator(examples[i : i + BATCH]) for i in range(0, len(examples), BATCH)]
    model = tiny_causal_lm("llama", "sdpa", vocab_size=len(tok)).eval()
    embedded: list[int] = []
    model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: embedded.append(args[0].numel())
    )

    fast = evaluate_split(model, tok, batches, "val", out_dir=tmp_path / "fast")
    fast_tokens = sum(embedded)
    embedded.clear()
    monkeypatch.setattr(evaluate, "prompt_cache_for", lambda *args: None)
    slow = evaluate_split(model, tok, batches, "val", out_dir=tmp_path / "slow")
    slow_tokens = sum(embedded)

    assert fast == slow
    read = lambda d: (d / "val_predictions.jsonl").read_text(encoding="utf-8")  # noqa: E731
    assert read(tmp_path / "fast") == read(tmp_path / "slow")
    # Decoding from scratch embeds every batch's padded prompt once more.
    prompts = sum(b["prompt_ids"].numel() for b in batches)
    rows = sum(len(b["rows"]) for b in batches)
    assert slow_tokens - fast_tokens == prompts - rows


def test_prompt_cache_only_when_both_protocols_share_a_forward():
    model = tiny_causal_lm("llama", "sdpa")
    both = ("ranking", "generation")
    assert isinstance(prompt_cache_for(model, both, "shared"), DynamicCache)
    assert prompt_cache_for(model, both, "concat") is None
    assert prompt_cache_for(model, ("ranking",), "shared") is None
    assert prompt_cache_for(model, ("generation",), "shared") is None
    model.config._attn_implementation = "flash_attention_2"  # no packed mask there
    assert prompt_cache_for(model, both, "shared") is None
