"""Multi-negative preference objectives: DPO, DMPO, S-DPO and MPPO.

Two layers:

* ``*_losses`` take the per-answer scores (log-ratios r, or MPPO's probabilities p),
  a per-negative coefficient ``(B, K)`` and a mask, and return ``(B,)`` losses. Only
  masked-in negatives enter the loss; the others receive exactly zero gradient. The
  DynamicPO plug-in (:mod:`recpo.objectives.plugin`) reuses them with its own
  mask and β_j.
* :func:`dpo`, :func:`dmpo`, :func:`sdpo` and :func:`mppo` are the plain objectives,
  ``objective(logps: PreferenceLogps) -> ObjectiveOutput``, the Hydra targets of
  ``conf/objective/{dpo,dmpo,sdpo,mppo}.yaml``.

Notation: L = summed answer log-likelihood, r = L − L_ref (r = L when
``reference_free``), β the inverse temperature (β0 = 1 in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recpo.objectives.diagnostics import boundary_metrics, reward_metrics
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps, require_finite


def logratios(logps: PreferenceLogps, reference_free: bool = False) -> tuple[Tensor, Tensor]:
    """Log-ratios r_w ``(B,)`` and r_k ``(B, K)`` against the reference model.

    Args:
        logps: the forward-pass results.
        reference_free: use r = L (a uniform reference) and ignore any reference logps.

    Raises:
        ValueError: when a reference is needed but absent, or (on CPU) a valid
            log-prob is not finite.
    """
    valid = logps.valid
    require_finite(logps.policy_chosen, None, "policy_chosen")
    require_finite(logps.policy_rejected, valid, "policy_rejected")
    if reference_free:
        return logps.policy_chosen, logps.policy_rejected
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError(
            "this objective needs reference log-probs (ref_chosen, ref_rejected); "
            "pass them or set reference_free=true"
        )
    require_finite(logps.ref_chosen, None, "ref_chosen")
    require_finite(logps.ref_rejected, valid, "ref_rejected")
    return logps.policy_chosen - logps.ref_chosen, logps.policy_rejected - logps.ref_rejected


def mean_token_probs(logps: PreferenceLogps) -> tuple[Tensor, Tensor]:
    """MPPO's probabilities p(y) = exp(L(y) / |y|) from mean token log-probs.

    Returns:
        p_w ``(B,)`` and p_k ``(B, K)``, differentiable.

    Raises:
        ValueError: when the token counts are missing, or (on CPU) a valid log-prob
            is not finite.
    """
    if logps.chosen_tokens is None or logps.rejected_tokens is None:
        raise ValueError("MPPO needs chosen_tokens and rejected_tokens (answer token counts)")
    valid = logps.valid
    require_finite(logps.policy_chosen, None, "policy_chosen")
    require_finite(logps.policy_rejected, valid, "policy_rejected")
    chosen = logps.policy_chosen / logps.chosen_tokens.clamp(min=1).to(logps.policy_chosen)
    rejected = logps.policy_rejected / logps.rejected_tokens.clamp(min=1).to(logps.policy_rejected)
    # Masked entries may hold garbage; keep them finite so no NaN reaches a gradient.
    rejected = torch.where(valid, rejected, 0.0)
    return chosen.exp(), rejected.exp()


def _coefficient(coef: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(coef, dtype=like.dtype, device=like.device).detach().expand_as(like)


def dmpo_losses(chosen: Tensor, rejected: Tensor, beta: Tensor | float, mask: Tensor) -> Tensor:
    """−log σ( Σ_{k∈M} β_k (r_w − r_k) / |M| ), M the masked-in negatives.

    With a constant β this is DMPO's −log σ(β r_w − (1/|M|) Σ_k β r_k); with the
    selection mask and β_j it is DynamicPO's loss. Rows with an empty M get loss 0.

    Args:
        chosen: ``(B,)`` r_w.
        rejected: ``(B, K)`` r_k.
        beta: ``(B, K)`` per-negative β (detached) or a float.
        mask: ``(B, K)`` bool.

    Returns:
        ``(B,)`` losses.
    """
    beta = _coefficient(beta, rejected)
    terms = torch.where(mask, beta * (chosen[:, None] - rejected), 0.0)
    count = mask.sum(dim=-1)
    logits = terms.sum(dim=-1) / count.clamp(min=1)
    return torch.where(count > 0, -F.logsigmoid(logits), 0.0)


def sdpo_losses(chosen: Tensor, rejected: Tensor, beta: Tensor | float, mask: Tensor) -> Tensor:
    """−log σ( −log Σ_{k∈M} exp(β_k (r_k − r_w)) ), computed with ``logsumexp``.

    Stable for any margin (the prior code summed raw ``exp`` and overflowed). Rows
    with an empty M get loss 0.

    Args:
        chosen: ``(B,)`` r_w.
        rejected: ``(B, K)`` r_k.
        beta: ``(B, K)`` per-negative β (detached) or a float.
        mask: ``(B, K)`` bool.

    Returns:
        ``(B,)`` losses.
    """
    beta = _coefficient(beta, rejected)
    has_negative = mask.any(dim=-1, keepdim=True)
    # A row of all -inf would give logsumexp a NaN gradient: such rows use zeros and
    # are zeroed out below.
    exponents = torch.where(mask, beta * (rejected - chosen[:, None]), -torch.inf)
    exponents = torch.where(has_negative, exponents, 0.0)
    log_partition = torch.logsumexp(exponents, dim=-1)
    return torch.where(has_negative[:, 0], -F.logsigmoid(-log_partition), 0.0)


def mppo_losses(chosen: Tensor, rejected: Tensor, weight: Tensor | float, mask: Tensor) -> Tensor:
    """−log σ( Σ_{k∈M} w_k (p_w − p_k) ).

    With w = 1 this is MPPO's −log σ(|M|·p_w − Σ_k p_k); the DynamicPO plug-in
    passes w_j = β_j / β0. Rows with an empty M get loss 0.

    Args:
        chosen: ``(B,)`` p_w.
        rejected: ``(B, K)`` p_k.
        weight: ``(B, K)`` per-negative weight (detached) or a float.
        mask: ``(B, K)`` bool.

    Returns:
        ``(B,)`` losses.
    """
    weight = _coefficient(weight, rejected)
    terms = torch.where(mask, weight * (chosen[:, None] - rejected), 0.0)
    return torch.where(mask.any(dim=-1), -F.logsigmoid(terms.sum(dim=-1)), 0.0)


def objective_output(
    logps: PreferenceLogps,
    losses: Tensor,
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    metrics: dict[str, Tensor] | None = None,
) -> ObjectiveOutput:
    """Assemble an :class:`ObjectiveOutput` with the reward and boundary diagnostics."""
    valid = logps.valid
    chosen_rewards = chosen_rewards.detach()
    rejected_rewards = torch.where(valid, rejected_rewards.detach(), 0.0)
    all_metrics = reward_metrics(chosen_rewards, rejected_rewards, valid)
    all_metrics.update(boundary_metrics(logps.policy_chosen, logps.policy_rejected, valid))
    all_metrics.update(metrics or {})
    return ObjectiveOutput(
        losses=losses,
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        metrics=all_metrics,
    )


def dpo(
    logps: PreferenceLogps, *, beta: float = 1.0, reference_free: bool = False
) -> ObjectiveOutput:
    """DPO with one negative: −log σ(β (r_w − r_1)).

    Worked example: β = 1, L_w = −2, L_ref,w = −3, L_1 = −4, L_ref,1 = −3:
    r_w = 1, r_1 = −1, loss = −log σ(2) = log(1 + e^{−2}) = 0.126928.

    Args:
        logps: forward-pass results with K = 1 (a masked negative gives loss 0).
        beta: β.
        reference_free: use r = L.

    Raises:
        ValueError: when K != 1, or a reference is needed but absent.
    """
    if logps.num_negatives != 1:
        raise ValueError(
            f"dpo takes exactly one negative per example (K=1); got K={logps.num_negatives}. "
            "Use dmpo or sdpo for several negatives."
        )
    chosen, rejected = logratios(logps, reference_free)
    valid = logps.valid[:, 0]
    margin = torch.where(valid, chosen - rejected[:, 0], 0.0)
    losses = torch.where(valid, -F.logsigmoid(beta * margin), 0.0)
    return objective_output(logps, losses, beta * chosen, beta * rejected)


def dmpo(
    logps: PreferenceLogps, *, beta: float = 1.0, reference_free: bool = False
) -> ObjectiveOutput:
    """DMPO: −log σ(β r_w − (1/K) Σ_k β r_k) over the valid negatives.

    Worked example: β = 1, reference-free, L_w = −1, L = [−2, −4]:
    logit = −1 − (−2 − 4)/2 = 2, loss = log(1 + e^{−2}) = 0.126928.

    Args:
        logps: forward-pass results.
        beta: β.
        reference_free: use r = L.
    """
    chosen, rejected = logratios(logps, reference_free)
    losses = dmpo_losses(chosen, rejected, beta, logps.valid)
    return objective_output(logps, losses, beta * chosen, beta * rejected)


def sdpo(
    logps: PreferenceLogps, *, beta: float = 1.0, reference_free: bool = False
) -> ObjectiveOutput:
    """S-DPO: −log σ(−log Σ_k exp(β (r_k − r_w))) over the valid negatives.

    Worked example: β = 1, reference-free, L_w = 0, L = [−1, −1]:
    Σ exp = 2e^{−1} = 0.735759, −log of it = 0.306853,
    loss = log(1 + e^{−0.306853}) = 0.551445.

    Args:
        logps: forward-pass results.
        beta: β.
        reference_free: use r = L.
    """
    chosen, rejected = logratios(logps, reference_free)
    losses = sdpo_losses(chosen, rejected, beta, logps.valid)
    return objective_output(logps, losses, beta * chosen, beta * rejected)


def mppo(logps: PreferenceLogps) -> ObjectiveOutput:
    """MPPO: −log σ(K p_w − Σ_k p_k), p(y) = exp(mean token log-prob of y).

    No reference model and no β. Rewards are the probabilities p.

    Worked example: L_w = −1 over 2 tokens (p_w = e^{−0.5} = 0.606531), negatives
    L = [−2, −6] over [2, 3] tokens (p = e^{−1}, e^{−2} = 0.367879, 0.135335):
    logit = 2·0.606531 − 0.503215 = 0.709847, loss = log(1 + e^{−0.709847}) = 0.399930.

    Args:
        logps: forward-pass results with ``chosen_tokens`` and ``rejected_tokens``.
    """
    chosen, rejected = mean_token_probs(logps)
    losses = mppo_losses(chosen, rejected, 1.0, logps.valid)
    return objective_output(logps, losses, chosen, rejected)
