"""Training objectives of the sequential baselines, as per-example tensor functions.

* ``full_softmax_loss``: cross-entropy of the target against every item (the default
  of the LLaRA/S-DPO baselines, which train exactly these sequences).
* ``sampled_bce_loss``: binary cross-entropy of the target against K sampled
  negatives (SASRec's and Caser's papers).

Both return one loss per example and never average: the caller does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def full_softmax_loss(scores: Tensor, target: Tensor) -> Tensor:
    """``-log softmax(scores)[target]`` per row.

    Args:
        scores: ``(B, N)`` scores of every item.
        target: ``(B,)`` item index of each row's target.

    Returns:
        ``(B,)`` losses.
    """
    return F.cross_entropy(scores, target, reduction="none")


def sampled_bce_loss(positive: Tensor, negatives: Tensor, mask: Tensor | None = None) -> Tensor:
    """``-log sigmoid(s+) - sum_k log(1 - sigmoid(s_k))`` per row.

    Args:
        positive: ``(B,)`` target scores.
        negatives: ``(B, K)`` negative scores.
        mask: Optional ``(B, K)`` bool, False for negatives to ignore.

    Returns:
        ``(B,)`` losses.
    """
    # log(1 - sigmoid(s)) = logsigmoid(-s), computed stably.
    negative_terms = -F.logsigmoid(-negatives)
    if mask is not None:
        negative_terms = negative_terms * mask
    return -F.logsigmoid(positive) + negative_terms.sum(dim=-1)


def sample_negatives(
    target: Tensor, num_items: int, num_negatives: int, generator: torch.Generator | None = None
) -> Tensor:
    """Items drawn uniformly from all items except each row's target.

    Args:
        target: ``(B,)`` target item indices.
        num_items: ``N``, the number of items.
        num_negatives: ``K``, draws per row (with replacement).
        generator: Optional random generator.

    Returns:
        ``(B, K)`` item indices, never equal to the row's target.
    """
    draws = torch.randint(
        num_items - 1, (target.size(0), num_negatives), generator=generator, device=target.device
    )
    # Draw among N - 1 values and skip over the target: exactly uniform over the others.
    return draws + (draws >= target[:, None]).long()
