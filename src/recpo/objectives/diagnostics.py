"""Detached scalar diagnostics of a preference batch, ready to log.

Every function returns ``dict[str, Tensor]`` keyed by the names of
:mod:`recpo.metric_names`, of 0-dim float32 tensors on the input's
device (no host synchronisation). Means over an empty set are 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recpo import metric_names as names
from recpo.objectives.selection import RULE_ALL, RULE_CLUSTER, RULE_VIOLATION


def masked_mean(values: Tensor, where: Tensor) -> Tensor:
    """Mean of ``values`` over the True entries of ``where`` (0 when there are none)."""
    values = values.detach().float()
    return torch.where(where, values, 0.0).sum() / where.sum().clamp(min=1)


def masked_std(values: Tensor, where: Tensor) -> Tensor:
    """Population std of ``values`` over the True entries of ``where`` (0 when none)."""
    values = values.detach().float()
    mean = masked_mean(values, where)
    return masked_mean((values - mean).square(), where).sqrt()


def reward_metrics(
    chosen_rewards: Tensor, rejected_rewards: Tensor, valid: Tensor
) -> dict[str, Tensor]:
    """Reward statistics over the valid negatives.

    ``rewards/win_rate`` is the share of examples whose chosen reward beats every valid
    negative's (the prior code's ``rewards/accuracies``, paper Fig. 4b);
    ``rewards/pairwise_accuracy`` the share of (example, negative) pairs it beats.

    Args:
        chosen_rewards: ``(B,)``.
        rejected_rewards: ``(B, K)``.
        valid: ``(B, K)`` bool.
    """
    chosen = chosen_rewards.detach()[:, None]
    rejected = rejected_rewards.detach()
    beats = chosen > rejected
    has_negative = valid.any(dim=-1)
    return {
        names.REWARD_CHOSEN: chosen_rewards.detach().float().mean(),
        names.REWARD_REJECTED: masked_mean(rejected, valid),
        names.REWARD_MARGIN: masked_mean(chosen - rejected, valid),
        names.REWARD_WIN_RATE: masked_mean((beats | ~valid).all(dim=-1), has_negative),
        names.REWARD_PAIRWISE_ACCURACY: masked_mean(beats, valid),
    }


def boundary_metrics(
    policy_chosen: Tensor, policy_rejected: Tensor, valid: Tensor
) -> dict[str, Tensor]:
    """Share of boundary-critical negatives (L_w − L_k ≤ 0) among the valid ones (Fig. 3).

    Args:
        policy_chosen: ``(B,)`` L_w.
        policy_rejected: ``(B, K)`` L_k.
        valid: ``(B, K)`` bool.
    """
    gap = policy_chosen.detach()[:, None] - policy_rejected.detach()
    critical = gap <= 0
    return {
        names.CRITICAL_SHARE: masked_mean(critical, valid),
        names.DISCRIMINATIVE_SHARE: masked_mean(~critical, valid),
        names.LOGPS_CHOSEN: policy_chosen.detach().float().mean(),
        names.LOGPS_REJECTED: masked_mean(policy_rejected, valid),
    }


def selection_metrics(selected: Tensor, rule: Tensor | None, valid: Tensor) -> dict[str, Tensor]:
    """How many negatives were selected per example and by which rule (Stage I, Stage II,
    neither).

    Args:
        selected: ``(B, K)`` bool selection.
        rule: ``(B,)`` long rule codes (``RULE_*`` of :mod:`recpo.objectives.selection`),
            or None for a selector without Stage I and II (Top-K).
        valid: ``(B, K)`` bool.
    """
    rows = valid.any(dim=-1)
    metrics = {
        names.SELECT_COUNT: masked_mean(selected.sum(dim=-1), rows),
        names.SELECT_SHARE: masked_mean(selected, valid),
    }
    if rule is not None:
        metrics[names.SELECT_STAGE1_SHARE] = masked_mean(rule == RULE_VIOLATION, rows)
        metrics[names.SELECT_STAGE2_SHARE] = masked_mean(rule == RULE_CLUSTER, rows)
        metrics[names.SELECT_ALL_SHARE] = masked_mean(rule == RULE_ALL, rows)
    return metrics


def beta_metrics(
    beta: Tensor, delta_p: Tensor, delta_n: Tensor, selected: Tensor
) -> dict[str, Tensor]:
    """Mean and std of the per-negative β_j and the mean dual margins, over selected negatives.

    Args:
        beta: ``(B, K)`` β actually used in the loss.
        delta_p: ``(B, K)`` δp.
        delta_n: ``(B, K)`` δn.
        selected: ``(B, K)`` bool.
    """
    return {
        names.BETA_MEAN: masked_mean(beta, selected),
        names.BETA_STD: masked_std(beta, selected),
        names.DELTA_P_MEAN: masked_mean(delta_p, selected),
        names.DELTA_N_MEAN: masked_mean(delta_n, selected),
    }
