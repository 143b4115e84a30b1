"""Metrics over candidate lists, shared by the LLM recommenders and the baselines.

Ranking (scores over the candidates of each row):
    rank = number of other candidates scoring strictly higher than the target,
    plus the number of other candidates tying with it (ties count against the
    model, so an untrained model with equal scores gets HitRatio 0, not 1/C).
    HitRatio@k = mean(rank < k); NDCG@k = mean(1 / log2(rank + 2) if rank < k).

Generation (the paper's protocol): an answer is *valid* when exactly one candidate
title occurs in it, and a *hit* when it is valid and the target occurs in it.
HitRatio@1 = hits / rows, ValidRatio = valid / rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor


def target_ranks(scores: Tensor, target_index: Tensor, valid: Tensor | None = None) -> Tensor:
    """0-based rank of the target among the candidates of each row.

    Args:
        scores: ``(B, C)`` higher is better.
        target_index: ``(B,)`` index of the target in each row.
        valid: optional ``(B, C)`` bool; invalid candidates never outrank the target.

    Returns:
        ``(B,)`` long tensor.
    """
    target = scores.gather(1, target_index[:, None])
    others = torch.ones_like(scores, dtype=torch.bool)
    others.scatter_(1, target_index[:, None], False)
    if valid is not None:
        others &= valid.bool()
    return ((scores >= target) & others).sum(dim=1)


def ranking_metrics(
    scores: Tensor, target_index: Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, Tensor]:
    """Per-row HitRatio@k and NDCG@k, as float tensors ``(B,)`` keyed ``hr@k`` / ``ndcg@k``."""
    rank = target_ranks(scores, target_index).float()
    out = {}
    for k in ks:
        hit = (rank < k).float()
        out[f"hr@{k}"] = hit
        if k > 1:
            out[f"ndcg@{k}"] = hit / torch.log2(rank + 2.0)
    return out


@dataclass(frozen=True)
class GenerationOutcome:
    """Judgement of one generated answer."""

    valid: bool
    hit: bool
    matched: tuple[str, ...]  # candidate titles found in the answer


def _occurs_strict(title: str, text: str) -> bool:
    """``title`` occurs in ``text`` as a whole phrase (not inside a longer word)."""
    return re.search(r"(?<!\w)" + re.escape(title) + r"(?!\w)", text) is not None


def judge_generation(
    answer: str, candidates: list[str], target: str, matcher: str = "substring"
) -> GenerationOutcome:
    """Apply the paper's validity/hit rule to one generated answer.

    Args:
        answer: The decoded generated text (prompt excluded).
        candidates: The candidate titles shown in the prompt.
        target: The target title.
        matcher: ``substring`` (the paper's rule: plain ``title in answer``) or
            ``strict``: whole-phrase matches only, and a title found only inside a
            longer matched candidate title does not count.
    """
    if matcher == "substring":
        matched = tuple(c for c in candidates if c in answer)
    elif matcher == "strict":
        found = [c for c in candidates if _occurs_strict(c, answer)]
        matched = tuple(c for c in found if not any(c != o and c in o for o in found))
    else:
        raise ValueError(f"matcher must be 'substring' or 'strict', got {matcher!r}")
    valid = len(matched) == 1
    return GenerationOutcome(valid, valid and target in matched, matched)


def has_nested_titles(candidates: list[str]) -> bool:
    """True when one candidate title contains another (substring matching can misjudge)."""
    return any(a != b and a in b for a in candidates for b in candidates)
