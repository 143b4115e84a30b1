"""Log-probabilities of several candidate answers to the same prompt.

Preference objectives (DPO, S-DPO, DMPO, DynamicPO) and likelihood-ranking
evaluation score one prompt against 1 + K answers. Two equivalent ways:

* ``concat``, the reference: one row per (prompt, answer) pair, as in the prior
  implementations (TRL, S-DPO, DynamicPO). The ~200-token prompt is recomputed
  for every answer and full-vocabulary logits are computed at every position.
* ``shared``: one packed row per example, ``[prompt | answer_1 | ... | answer_N]``.
  A float additive 4D mask lets every answer token see the prompt and the
  earlier tokens of its own answer only, and position ids restart at the prompt
  length for every answer, so each answer token sees exactly the keys and
  rotary positions it would see in its own concatenated row. The output
  embedding is applied only at the positions that predict answer tokens.

Both return an :class:`AnswerScores` with the same values up to float rounding.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

ScoringMethod = Literal["shared", "concat"]


@dataclass
class AnswerScores:
    """Summed answer log-probabilities, the input of every preference loss.

    Attributes:
        logps: ``(B, N)`` float32, sum over each answer's real tokens of
            ``log p(token | prompt, earlier answer tokens)``; 0 for an absent answer.
        num_tokens: ``(B, N)`` int64, number of real tokens of each answer
            (answers include their end token); 0 for an absent answer.
    """

    logps: Tensor
    num_tokens: Tensor

    @property
    def mean_logps(self) -> Tensor:
        """``(B, N)`` length-normalised log-probabilities (absent answers give 0)."""
        return self.logps / self.num_tokens.clamp(min=1)


def score_answers(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    answer_ids: Tensor,
    answer_mask: Tensor,
    method: ScoringMethod = "shared",
) -> AnswerScores:
    """Score N answers per prompt with a causal LM.

    Gradients flow to the model's trainable parameters; call it under
    ``torch.no_grad()`` for a reference model or for evaluation.

    Args:
        model: a Hugging Face causal LM (Llama, Qwen2, ...) or a peft LoRA
            ``PeftModel`` wrapping one.
        prompt_ids: ``(B, P)`` token ids, left- or right-padded.
        prompt_mask: ``(B, P)`` 1 for real prompt tokens; every prompt needs at
            least one real token.
        answer_ids: ``(B, N, A)`` token ids, right-padded within ``A``.
        answer_mask: ``(B, N, A)`` 1 for real answer tokens; an all-zero slot
            is an absent answer and scores 0.
        method: ``"shared"`` (one packed row per example) or ``"concat"`` (one
            row per answer, the slow reference).

    Returns:
        AnswerScores with ``(B, N)`` log-probabilities and token counts.
    """
    scorers: dict[str, Callable[..., AnswerScores]] = {
        "shared": score_answers_shared,
        "concat": score_answers_concat,
    }
    if method not in scorers:
        raise ValueError(f"unknown scoring method {method!r}; expected one of {sorted(scorers)}")
    return scorers[method](model, prompt_ids, prompt_mask, answer_ids, answer_mask)


def left_align(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's real tokens to its right end, keeping their order.

    Args:
        ids: ``(B, L)`` token ids.
        mask: ``(B, L)`` 1 (or True) for real tokens.

    Returns:
        ``(ids, mask)``, both ``(B, L)``, left-padded.
    """
    # A stable sort of the 0/1 mask puts the pad slots first and keeps the
    # real tokens in their original order, whatever the input padding side.
    order = torch.sort(mask.long(), dim=-1, stable=True).indices
    return ids.gather(-1, order), mask.gather(-1, order)


def score_answers_concat(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    answer_ids: Tensor,
    answer_mask: Tensor,
) -> AnswerScores:
    """Reference scoring: each answer appended to its own copy of the prompt.

    Runs the model's ordinary forward on ``B * N`` rows of length ``P + A`` and
    takes a log-softmax over the full vocabulary, as the prior implementations
    do. Shapes as in :func:`score_answers`.
    """
    batch, prompt_len = prompt_ids.shape
    _, num_answers, answer_len = answer_ids.shape
    # Left padding makes the answer follow the last real prompt token directly.
    prompt_ids, prompt_mask = left_align(prompt_ids, prompt_mask.bool())
    answer_real = answer_mask.bool()

    row_shape = (batch, num_answers, prompt_len)
    input_ids = torch.cat([prompt_ids[:, None].expand(row_shape), answer_ids], dim=-1)
    attention_mask = torch.cat([prompt_mask[:, None].expand(row_shape), answer_real], dim=-1)
    input_ids = input_ids.reshape(batch * num_answers, prompt_len + answer_len)
    attention_mask = attention_mask.reshape(batch * num_answers, prompt_len + answer_len).long()
    # Explicit positions make left padding invisible to the rotary embedding,
    # the same positions the shared path uses.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).logits  # (B*N, P+A, V)
    # Position P-1+t predicts answer token t.
    answer_logits = logits[:, prompt_len - 1 : -1].float()
    targets = answer_ids.reshape(batch * num_answers, answer_len, 1)
    token_logps = answer_logits.log_softmax(-1).gather(-1, targets).squeeze(-1)
    token_logps = token_logps.view(batch, num_answers, answer_len).masked_fill(~answer_real, 0.0)
    return AnswerScores(logps=token_logps.sum(-1), num_tokens=answer_real.sum(-1))


def score_answers_shared(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    answer_ids: Tensor,
    answer_mask: Tensor,
    prompt_cache: Any = None,
) -> AnswerScores:
    """Fast scoring: the prompt once, then all answers, in one packed row.

    The packed row is ``[prompt (P, left-padded) | answer_1 | ... | answer_N | pad]``
    with every answer's real tokens only, one after the other, so its length is
    ``S = P + max over the batch of the summed answer lengths`` (answer slots are
    padded to the longest answer of the batch, ``A``; packing them as slots would
    make ``S = P + N * A``, about twice as long for real titles). With ``eager`` or
    ``sdpa`` attention the row gets a float additive ``(B, 1, S, S)`` mask; with
    ``flex_attention`` (CUDA) a FlexAttention ``BlockMask``. FlashAttention-2 cannot
    take such masks: use ``concat`` there. Shapes as in :func:`score_answers`.

    ``prompt_cache``, an empty transformers ``DynamicCache``, receives the packed
    forward's keys and values, cut back to the first ``P - 1`` columns: the
    left-aligned prompt (:func:`left_align`) but its last token, as ``generate``
    expects a cache of the prompt it continues, so greedy decoding can follow the
    scoring without running the prompt again (needs a decoder that writes the
    cache, ``eager`` or ``sdpa``).
    """
    causal_lm = _unwrap_causal_lm(model)
    decoder = causal_lm.get_decoder()
    output_embedding = causal_lm.get_output_embeddings()
    attn_implementation = causal_lm.config._attn_implementation

    batch, prompt_len = prompt_ids.shape
    _, num_answers, answer_len = answer_ids.shape
    device = prompt_ids.device

    prompt_ids, prompt_real = left_align(prompt_ids, prompt_mask.bool())
    answer_real = answer_mask.bool()  # (B, N, A), real tokens first in each slot
    lengths = answer_real.sum(-1)  # (B, N)
    starts = lengths.cumsum(-1) - lengths  # (B, N): where each answer starts after the prompt
    packed_answers = int(lengths.sum(-1).max())
    packed_len = prompt_len + packed_answers

    # Column of answer j's token t in the packed row, for the real tokens.
    token = torch.arange(answer_len, device=device)
    column = prompt_len + starts[..., None] + token  # (B, N, A)
    rows = torch.arange(batch, device=device)[:, None, None].expand_as(column)
    rows, column = rows[answer_real], column[answer_real]  # (T,) each

    input_ids = torch.zeros(batch, packed_len, dtype=prompt_ids.dtype, device=device)
    input_ids[:, :prompt_len] = prompt_ids
    input_ids[rows, column] = answer_ids[answer_real]
    key_real = torch.zeros(batch, packed_len, dtype=torch.bool, device=device)
    key_real[:, :prompt_len] = prompt_real
    key_real[rows, column] = True

    # 0 for the prompt, j for the j-th answer, -1 for padding: an answer sees
    # segment 0 and itself.
    segment = torch.full((batch, packed_len), -1, dtype=torch.long, device=device)
    segment[:, :prompt_len] = 0
    answer_number = torch.arange(1, num_answers + 1, device=device)[:, None].expand(
        num_answers, answer_len
    )
    segment[rows, column] = answer_number.expand_as(answer_real)[answer_real]

    # Prompt tokens count 0.. from the first real one; every answer restarts at
    # the real prompt length, as if it were the only continuation.
    real_prompt_len = prompt_real.sum(-1)  # (B,)
    position_ids = torch.zeros(batch, packed_len, dtype=torch.long, device=device)
    position_ids[:, :prompt_len] = (prompt_real.long().cumsum(-1) - 1).clamp(min=0)
    answer_positions = real_prompt_len[:, None, None] + token  # (B, 1, A)
    position_ids[rows, column] = answer_positions.expand_as(answer_real)[answer_real]

    if attn_implementation == "flex_attention":
        attention_mask = _flex_block_mask(segment, key_real)
    elif attn_implementation in ("eager", "sdpa"):
        attention_mask = _additive_4d_mask(segment, key_real, _float_dtype(causal_lm))
    else:
        raise ValueError(
            f"shared scoring needs eager, sdpa or flex_attention, not {attn_implementation!r};"
            " use method='concat' with this attention implementation"
        )

    hidden = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=prompt_cache is not None,
        **({} if prompt_cache is None else {cache_argument(decoder): prompt_cache}),
    ).last_hidden_state  # (B, S, H)
    if prompt_cache is not None:
        # Keys and values of a prompt column depend on the prompt only (it sees no
        # answer), so they are the ones a prompt-only forward would store.
        prompt_cache.crop(-(packed_len - prompt_len + 1))

    # Hidden state that predicts a token: the previous token of its answer, or the
    # last prompt token (column P-1 after left alignment) for an answer's first.
    first = token.expand_as(answer_real)[answer_real] == 0  # (T,)
    predictor = torch.where(first, prompt_len - 1, column - 1)
    # Keep only real answer tokens before the head: the (T, V) logits, T = number
    # of real answer tokens in the batch, are the only vocabulary-sized tensor.
    selected_hidden = hidden[rows, predictor]  # (T, H)
    targets = answer_ids[answer_real]  # (T,)
    token_logps = _token_logps(output_embedding(selected_hidden), targets)  # (T,)

    padded = torch.zeros(answer_real.shape, dtype=token_logps.dtype, device=device)
    token_logps = padded.masked_scatter(answer_real, token_logps)
    return AnswerScores(logps=token_logps.sum(-1), num_tokens=lengths)


def cache_argument(model: nn.Module) -> str:
    """The name a transformers model (or a peft model's base) takes a key/value cache
    under, in ``forward`` and ``generate``: ``cache`` in transformers 5.2x,
    ``past_key_values`` before (and as a deprecated alias)."""
    forward = _unwrap_causal_lm(model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """``log_softmax(logits)[target]`` in float32, without materialising the log-softmax.

    Args:
        logits: ``(T, V)``.
        targets: ``(T,)`` token ids.

    Returns:
        ``(T,)`` float32 log-probabilities.
    """
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def _unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside ``model`` (itself, or a peft model's base)."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None:
        # LoRA layers live inside the base model's modules, so its decoder and
        # head include them; virtual prompt tokens would be added by the peft
        # forward, which the shared path bypasses.
        if peft_config.is_prompt_learning:
            raise NotImplementedError(
                "shared scoring supports LoRA-style adapters, not prompt learning"
            )
        model = model.get_base_model()
    if getattr(model.config, "final_logit_softcapping", None) is not None:
        raise NotImplementedError(
            "shared scoring applies the output embedding only, without logit softcapping"
        )
    return model


def _float_dtype(causal_lm: nn.Module) -> torch.dtype:
    """Floating dtype of the model's activations (its input embedding's)."""
    return causal_lm.get_input_embeddings().weight.dtype


def _allowed_keys(segment: Tensor, key_real: Tensor) -> Tensor:
    """Boolean ``(B, S, S)`` attention pattern of the packed rows.

    Query ``q`` may attend to key ``k <= q`` when ``k`` is a real token of the
    prompt (segment 0) or of ``q``'s own answer (the same segment). Every token
    may attend to itself, so pad queries never have an empty softmax row (which
    would give NaN under sdpa, or -inf arithmetic under autocast); nothing attends
    to pads, so their outputs never reach a real token.

    Args:
        segment: ``(B, S)`` 0 for the prompt, ``j`` for answer ``j``, -1 for padding.
        key_real: ``(B, S)`` True for real tokens.
    """
    positions = torch.arange(segment.shape[1], device=segment.device)
    causal = positions[None, :] <= positions[:, None]
    visible = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])
    allowed = causal[None] & visible & key_real[:, None, :]
    return allowed | torch.eye(segment.shape[1], dtype=torch.bool, device=segment.device)


def _additive_4d_mask(segment: Tensor, key_real: Tensor, dtype: torch.dtype) -> Tensor:
    """Float additive ``(B, 1, S, S)`` mask: 0 where allowed, the dtype's minimum elsewhere.

    Transformers adds a custom 4D mask to the attention scores as is, so it must
    be additive: a boolean mask would be added as 0/1 under eager attention.
    """
    batch, packed_len = key_real.shape
    # Row stride a multiple of 16 elements: CUDA's memory-efficient SDPA kernel
    # would otherwise copy the mask into an aligned buffer in every layer.
    row_stride = -(-packed_len // 16) * 16
    storage = torch.zeros(batch, 1, packed_len, row_stride, dtype=dtype, device=key_real.device)
    mask = storage[..., :packed_len]
    return mask.masked_fill_(~_allowed_keys(segment, key_real)[:, None], torch.finfo(dtype).min)


def _flex_block_mask(segment: Tensor, key_real: Tensor):
    """FlexAttention ``BlockMask`` with the pattern of :func:`_allowed_keys`."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, packed_len = key_real.shape

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        visible = (segment[b, kv] == 0) | (segment[b, kv] == segment[b, q])
        return ((kv <= q) & visible & key_real[b, kv]) | (q == kv)

    return create_block_mask(mask_mod, batch, None, packed_len, packed_len, device=key_real.device)
