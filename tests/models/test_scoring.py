"""Shared-prompt scoring against the concatenated reference and a plain computation."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from recpo.models.scoring import AnswerScores, left_align, score_answers

VOCAB = 97
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from threads, and on a busy shared machine
    waiting OpenMP threads make these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_causal_lm(
    arch: str, attn: str, hidden_size: int = 32, seed: int = 0, vocab_size: int = VOCAB
) -> nn.Module:
    """2-layer random model with 4 query and 2 key/value heads, in float32."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    return model.float()


def random_batch(
    batch: int,
    prompt_len: int,
    num_answers: int,
    answer_len: int,
    padding_side: str,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Prompts of 1..P real tokens padded on ``padding_side``; answers of 1..A
    real tokens, right-padded, with some absent negatives (empty slots)."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(1, VOCAB, (batch, prompt_len), generator=gen)
    answer_ids = torch.randint(1, VOCAB, (batch, num_answers, answer_len), generator=gen)
    prompt_lens = torch.randint(1, prompt_len + 1, (batch,), generator=gen)
    prompt_lens[0] = prompt_len  # one unpadded prompt
    answer_lens = torch.randint(1, answer_len + 1, (batch, num_answers), generator=gen)
    absent = torch.rand(batch, num_answers, generator=gen) < 0.2
    absent[:, 0] = False  # the positive is always there
    answer_lens[absent] = 0

    slots = torch.arange(prompt_len)
    if padding_side == "left":
        prompt_mask = slots >= prompt_len - prompt_lens[:, None]
    else:
        prompt_mask = slots < prompt_lens[:, None]
    answer_mask = torch.arange(answer_len) < answer_lens[..., None]
    # Pad slots hold id 0, as a tokenizer's pad id would.
    prompt_ids = prompt_ids.masked_fill(~prompt_mask, 0)
    answer_ids = answer_ids.masked_fill(~answer_mask, 0)
    return prompt_ids, prompt_mask.long(), answer_ids, answer_mask.long()


def scores_and_grads(
    model: nn.Module, batch: tuple[Tensor, ...], method: str
) -> tuple[AnswerScores, dict[str, Tensor]]:
    """Scores, and gradients of a weighted sum of all answers' log-probs."""
    model.zero_grad(set_to_none=True)
    scores = score_answers(model, *batch, method=method)
    weights = torch.linspace(-1.0, 2.0, scores.logps.numel()).view_as(scores.logps)
    (weights * scores.logps).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return scores, grads


def assert_same_scores_and_grads(model: nn.Module, batch: tuple[Tensor, ...]) -> None:
    shared, shared_grads = scores_and_grads(model, batch, "shared")
    concat, concat_grads = scores_and_grads(model, batch, "concat")
    torch.testing.assert_close(shared.logps, concat.logps, atol=1e-5, rtol=0)
    assert torch.equal(shared.num_tokens, concat.num_tokens)
    assert shared_grads.keys() == concat_grads.keys() and shared_grads
    for name, grad in shared_grads.items():
        torch.testing.assert_close(grad, concat_grads[name], atol=1e-4, rtol=0, msg=name)


@pytest.mark.parametrize("num_answers", [1, 4, 20])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_matches_concat(arch: str, attn: str, padding_side: str, num_answers: int) -> None:
    model = tiny_causal_lm(arch, attn)
    batch = random_batch(3, 9, num_answers, 5, padding_side, seed=num_answers)
    assert_same_scores_and_grads(model, batch)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_matches_concat_for_every_k(arch: str) -> None:
    """K = 1..19 negatives plus the positive, short sequences to stay fast."""
    model = tiny_causal_lm(arch, "sdpa")
    for num_answers in range(2, 21):
        side = "left" if num_answers % 2 else "right"
        batch = random_batch(2, 6, num_answers, 3, side, seed=num_answers)
        assert_same_scores_and_grads(model, batch)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_matches_concat_through_lora(arch: str, attn: str) -> None:
    model = tiny_causal_lm(arch, attn)
    # Random (non-zero) B matrices, so that the adapters change the outputs.
    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS, init_lora_weights=False
    )
    peft_model = get_peft_model(model, lora)
    batch = random_batch(3, 8, 6, 4, "right", seed=1)
    assert_same_scores_and_grads(peft_model, batch)

    _, grads = scores_and_grads(peft_model, batch, "shared")
    assert grads and all("lora_" in name for name in grads)
    with torch.no_grad():
        with_adapter = score_answers(peft_model, *batch).logps
        with peft_model.disable_adapter():
            without_adapter = score_answers(peft_model, *batch).logps
    assert not torch.allclose(with_adapter, without_adapter, atol=1e-3)


def test_shared_matches_concat_with_activation_checkpointing() -> None:
    model = tiny_causal_lm("llama", "sdpa")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert_same_scores_and_grads(model, random_batch(2, 8, 5, 4, "left", seed=3))


@pytest.mark.parametrize("method", ["shared", "concat"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_matches_plain_unpadded_computation(arch: str, padding_side: str, method: str) -> None:
    """Each answer scored alone: model(prompt + answer) without padding, mask or
    position ids, then log_softmax summed at the answer positions by hand."""
    model = tiny_causal_lm(arch, "eager").eval()
    prompt_ids, prompt_mask, answer_ids, answer_mask = random_batch(3, 10, 5, 4, padding_side)
    with torch.no_grad():
        scores = score_answers(model, prompt_ids, prompt_mask, answer_ids, answer_mask, method)
        for b in range(prompt_ids.shape[0]):
            prompt = prompt_ids[b][prompt_mask[b].bool()].tolist()
            for j in range(answer_ids.shape[1]):
                answer = answer_ids[b, j][answer_mask[b, j].bool()].tolist()
                logits = model(torch.tensor([prompt + answer])).logits[0]
                log_probs = torch.log_softmax(logits.double(), dim=-1)
                expected = sum(
                    log_probs[len(prompt) - 1 + t, token].item() for t, token in enumerate(answer)
                )
                assert scores.num_tokens[b, j].item() == len(answer)
                assert scores.logps[b, j].item() == pytest.approx(expected, abs=1e-5)


def test_absent_answers_score_zero_without_nans() -> None:
    model = tiny_causal_lm("llama", "sdpa")
    prompt_ids, prompt_mask, answer_ids, answer_mask = random_batch(2, 7, 4, 3, "left")
    answer_mask[:, 1:] = 0  # only the positive remains
    answer_mask[1, 2, 0] = 1  # ...and one single-token negative in example 1
    batch = (prompt_ids, prompt_mask, answer_ids, answer_mask)
    for method in ["shared", "concat"]:
        scores, grads = scores_and_grads(model, batch, method)
        assert torch.equal(scores.num_tokens, answer_mask.sum(-1))
        assert torch.all(scores.logps[answer_mask.sum(-1) == 0] == 0)
        assert torch.all(scores.logps[:, 0] < 0)
        assert torch.all(torch.isfinite(scores.mean_logps))
        assert all(torch.isfinite(g).all() for g in grads.values())


def test_no_grad_gives_same_scores() -> None:
    model = tiny_causal_lm("qwen2", "sdpa")
    batch = random_batch(2, 8, 5, 4, "left")
    with_grad = score_answers(model, *batch)
    with torch.no_grad():
        without_grad = score_answers(model, *batch)
    assert with_grad.logps.requires_grad and not without_grad.logps.requires_grad
    torch.testing.assert_close(with_grad.logps.detach(), without_grad.logps, atol=0, rtol=0)


def test_head_applied_only_at_answer_positions() -> None:
    """The output embedding sees one row per real answer token, nothing more."""
    model = tiny_causal_lm("llama", "eager")
    batch = random_batch(3, 9, 6, 4, "right")
    rows = []
    handle = model.lm_head.register_forward_hook(lambda mod, args, out: rows.append(out.shape))
    score_answers(model, *batch)
    handle.remove()
    assert rows == [torch.Size([batch[3].sum().item(), VOCAB])]


def test_packed_row_holds_real_answer_tokens_only() -> None:
    """Answers of 1..4 tokens packed one after the other: the decoder sees rows of
    P + the longest summed answer length, not P + N * A slots."""
    model = tiny_causal_lm("llama", "sdpa")
    batch = random_batch(3, 9, 6, 4, "right")
    shapes = []
    handle = model.model.embed_tokens.register_forward_hook(
        lambda mod, args, out: shapes.append(tuple(args[0].shape))
    )
    score_answers(model, *batch)
    handle.remove()
    longest = int(batch[3].sum((1, 2)).max())
    assert longest < 6 * 4
    assert shapes == [(3, 9 + longest)]


def test_mean_logps_by_hand() -> None:
    """[-4 over 2 tokens, absent, -3 over 1 token] -> [-2, 0, -3]."""
    scores = AnswerScores(
        logps=torch.tensor([[-4.0, 0.0, -3.0]]), num_tokens=torch.tensor([[2, 0, 1]])
    )
    assert scores.mean_logps.tolist() == [[-2.0, 0.0, -3.0]]


def test_left_align_keeps_token_order() -> None:
    """[a b _ _] -> [_ _ a b]; [_ c d e] and [f g h i] stay as they are."""
    ids = torch.tensor([[1, 2, 0, 0], [0, 3, 4, 5], [6, 7, 8, 9]])
    mask = ids != 0
    aligned_ids, aligned_mask = left_align(ids, mask)
    assert aligned_ids.tolist() == [[0, 0, 1, 2], [0, 3, 4, 5], [6, 7, 8, 9]]
    assert aligned_mask.tolist() == [[False, False, True, True], [False, True, True, True]] + [
        [True] * 4
    ]


def test_unknown_method_raises() -> None:
    model = tiny_causal_lm("llama", "eager")
    with pytest.raises(ValueError, match="unknown scoring method"):
        score_answers(model, *random_batch(1, 4, 2, 2, "left"), method="packed")


def test_shared_in_bfloat16_is_close_to_concat() -> None:
    model = tiny_causal_lm("llama", "sdpa").to(torch.bfloat16)
    batch = random_batch(2, 9, 8, 4, "left")
    with torch.no_grad():
        shared = score_answers(model, *batch, method="shared")
        concat = score_answers(model, *batch, method="concat")
    assert torch.isfinite(shared.logps).all()
    torch.testing.assert_close(shared.logps, concat.logps, atol=0.15, rtol=0.02)


@pytest.mark.slow
def test_flex_block_mask_forward_on_cpu() -> None:
    """FlexAttention path (compiles, ~20 s); CPU flex has no backward."""
    model = tiny_causal_lm("llama", "flex_attention").eval()
    batch = random_batch(2, 9, 6, 4, "right")
    with torch.no_grad():
        shared = score_answers(model, *batch, method="shared")
        model.config._attn_implementation = "eager"
        concat = score_answers(model, *batch, method="concat")
    torch.testing.assert_close(shared.logps, concat.logps, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("attn", ["sdpa", "flex_attention"])
def test_shared_matches_concat_on_cuda(attn: str) -> None:
    # Head dimension 16: the smallest the FlexAttention kernels take.
    model = tiny_causal_lm("llama", attn, hidden_size=64).cuda()
    batch = tuple(t.cuda() for t in random_batch(3, 40, 16, 6, "left"))
    shared, shared_grads = scores_and_grads(model, batch, "shared")
    model.config._attn_implementation = "sdpa"
    concat, concat_grads = scores_and_grads(model, batch, "concat")
    # CUDA kernels reduce in other orders (TF32 off by default for fp32 matmul).
    torch.testing.assert_close(shared.logps, concat.logps, atol=1e-4, rtol=0)
    for name, grad in shared_grads.items():
        torch.testing.assert_close(grad, concat_grads[name], atol=1e-3, rtol=0, msg=name)
