"""DynamicPO as a plug-in to DMPO, S-DPO and MPPO, plus the Top-K and β-DPO baselines.

One mechanism for every base objective: a selector produces the mask of negatives
that enter the loss and a per-negative coefficient replaces the constant β. The base
objective's ``*_losses`` function (:mod:`recpo.objectives.losses`) is then applied
unchanged to (scores, coefficient, mask):

* DMPO:  −log σ( Σ_{j∈B} β_j (r_w − r_j) / |B| )        (the official DynamicPO loss)
* S-DPO: −log σ( −log Σ_{j∈B} exp(β_j (r_j − r_w)) )
* MPPO:  −log σ( Σ_{j∈B} (β_j/β0) (p_w − p_j) )           (MPPO has no β, so β_j/β0
  weights each pair term; with β0 = 1 this is the official exploratory-study code)

Selection and β always read the *policy* log-likelihoods L (summed over tokens), as
the official code does, whatever the objective scores with (log-ratios or MPPO's
mean-token probabilities). Both are constants for the gradient: negatives outside
B get exactly zero gradient. Reported rewards stay β0·r (MPPO: p) for every negative
so that win rates compare across methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from recpo.objectives.beta import BetaDPOState, beta_dpo_beta
from recpo.objectives.beta import dynamic_beta as compute_dynamic_beta
from recpo.objectives.diagnostics import beta_metrics, masked_mean, masked_std, selection_metrics
from recpo.objectives.losses import (
    dmpo_losses,
    logratios,
    mean_token_probs,
    mppo_losses,
    objective_output,
    sdpo_losses,
)
from recpo.objectives.selection import Solver, select_boundary_negatives, select_top_k
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps


@dataclass(frozen=True)
class _Base:
    """How a multi-negative objective scores answers and where β_j goes."""

    scores: Callable[[PreferenceLogps, bool], tuple[Tensor, Tensor]]
    losses: Callable[[Tensor, Tensor, Tensor | float, Tensor], Tensor]
    beta_is_temperature: bool  # False for MPPO: β_j/β0 is a weight, rewards are p


_DMPO = _Base(logratios, dmpo_losses, beta_is_temperature=True)
_SDPO = _Base(logratios, sdpo_losses, beta_is_temperature=True)
_MPPO = _Base(lambda logps, _: mean_token_probs(logps), mppo_losses, beta_is_temperature=False)


def _reweighted(
    logps: PreferenceLogps,
    base: _Base,
    *,
    selected: Tensor,
    beta: float,
    beta_used: Tensor,
    reference_free: bool,
    metrics: dict[str, Tensor],
    keep: Tensor | None = None,
) -> ObjectiveOutput:
    """Apply ``base`` to the selected negatives with per-negative β ``(B, K)``."""
    chosen, rejected = base.scores(logps, reference_free)
    scale = beta if base.beta_is_temperature else 1.0
    coefficient = beta_used if base.beta_is_temperature else beta_used / beta
    losses = base.losses(chosen, rejected, coefficient, selected)
    if keep is not None:
        losses = torch.where(keep, losses, 0.0)
    return objective_output(logps, losses, scale * chosen, scale * rejected, metrics)


def _dynamicpo(
    logps: PreferenceLogps,
    base: _Base,
    *,
    beta: float,
    alpha: float,
    gamma: float,
    stage1: bool,
    stage2: bool,
    dynamic_beta: bool,
    solver: Solver,
    stage1_inclusive: bool,
    lloyd_iters: int,
    reference_free: bool,
) -> ObjectiveOutput:
    valid = logps.valid
    selection = select_boundary_negatives(
        logps.policy_rejected,
        logps.policy_chosen,
        logps.mask,  # None (all valid) takes the selector's faster path
        stage1=stage1,
        stage2=stage2,
        solver=solver,
        stage1_inclusive=stage1_inclusive,
        lloyd_iters=lloyd_iters,
    )
    selected = selection.selected
    # δp, δn are computed even without dynamic β: they are logged by every variant.
    margins = compute_dynamic_beta(
        logps.policy_chosen,
        logps.policy_rejected,
        selected,
        logps.mask,
        beta0=beta,
        alpha=alpha,
        gamma=gamma,
        check_finite=False,  # the selector has just checked the same tensors
    )
    if dynamic_beta:
        beta_used = margins.beta
    else:
        beta_used = torch.where(selected, beta, 0.0).to(margins.beta)
    metrics = selection_metrics(selected, selection.stage, valid)
    metrics.update(beta_metrics(beta_used, margins.delta_p, margins.delta_n, selected))
    return _reweighted(
        logps,
        base,
        selected=selected,
        beta=beta,
        beta_used=beta_used,
        reference_free=reference_free,
        metrics=metrics,
    )


def dynamicpo(
    logps: PreferenceLogps,
    *,
    beta: float = 1.0,
    alpha: float = 0.5,
    gamma: float = 6.0,
    stage1: bool = True,
    stage2: bool = True,
    dynamic_beta: bool = True,
    solver: Solver = "exact",
    stage1_inclusive: bool = False,
    lloyd_iters: int = 20,
    reference_free: bool = False,
) -> ObjectiveOutput:
    """DynamicPO on DMPO: −log σ( Σ_{j∈B} β_j (r_w − r_j) / |B| ).

    B comes from :func:`~recpo.objectives.selection.select_boundary_negatives` and β_j
    from :func:`~recpo.objectives.beta.dynamic_beta`. With ``stage1 = stage2 =
    dynamic_beta = False`` this is exactly :func:`~recpo.objectives.losses.dmpo`.

    Worked example (β0 = 1, α = 0.5, γ = 6, reference-free): L_w = −5,
    L = [−4, −10, −12]. Stage I selects j = 0 (−4 > −5); β_0 = 1 + 0.5·tanh(−1.75)
    = 0.529312 (see ``dynamic_beta``); logit = 0.529312 · (−5 − (−4)) / 1 = −0.529312,
    loss = log(1 + e^{0.529312}) = 0.992423.

    Args:
        logps: forward-pass results.
        beta: β0.
        alpha: α of the dynamic β.
        gamma: γ of the dynamic β (paper 6.0; the official code hard-codes 2.0).
        stage1: Stage I (violations); False is the "w/o Stage (I)" ablation.
        stage2: Stage II (k-means top cluster); False is "w/o Stage (II)".
        dynamic_beta: per-negative β_j; False uses β0 ("w/o dynamic β").
        solver: Stage II k-means solver, ``"exact"`` or ``"lloyd"``.
        stage1_inclusive: Stage I with ``>=`` as in the official code.
        lloyd_iters: iterations of the Lloyd solver.
        reference_free: use r = L in the loss.
    """
    return _dynamicpo(
        logps,
        _DMPO,
        beta=beta,
        alpha=alpha,
        gamma=gamma,
        stage1=stage1,
        stage2=stage2,
        dynamic_beta=dynamic_beta,
        solver=solver,
        stage1_inclusive=stage1_inclusive,
        lloyd_iters=lloyd_iters,
        reference_free=reference_free,
    )


def dynamicpo_sdpo(
    logps: PreferenceLogps,
    *,
    beta: float = 1.0,
    alpha: float = 0.5,
    gamma: float = 6.0,
    stage1: bool = True,
    stage2: bool = True,
    dynamic_beta: bool = True,
    solver: Solver = "exact",
    stage1_inclusive: bool = False,
    lloyd_iters: int = 20,
    reference_free: bool = False,
) -> ObjectiveOutput:
    """DynamicPO on S-DPO: −log σ( −log Σ_{j∈B} exp(β_j (r_j − r_w)) ).

    Same arguments as :func:`dynamicpo`; everything switched off gives
    :func:`~recpo.objectives.losses.sdpo`.
    """
    return _dynamicpo(
        logps,
        _SDPO,
        beta=beta,
        alpha=alpha,
        gamma=gamma,
        stage1=stage1,
        stage2=stage2,
        dynamic_beta=dynamic_beta,
        solver=solver,
        stage1_inclusive=stage1_inclusive,
        lloyd_iters=lloyd_iters,
        reference_free=reference_free,
    )


def dynamicpo_mppo(
    logps: PreferenceLogps,
    *,
    alpha: float = 0.5,
    gamma: float = 6.0,
    stage1: bool = True,
    stage2: bool = True,
    dynamic_beta: bool = True,
    solver: Solver = "exact",
    stage1_inclusive: bool = False,
    lloyd_iters: int = 20,
) -> ObjectiveOutput:
    """DynamicPO on MPPO: −log σ( Σ_{j∈B} w_j (p_w − p_j) ), w_j = β_j/β0.

    MPPO has neither β nor a reference model, so β_j enters as the relative weight
    w_j = 1 + α·tanh(...) of each pair term (independent of β0, hence no ``beta``
    argument); ``beta/mean`` then logs w_j. Everything switched off gives
    :func:`~recpo.objectives.losses.mppo`. Arguments as in :func:`dynamicpo`.
    """
    return _dynamicpo(
        logps,
        _MPPO,
        beta=1.0,
        alpha=alpha,
        gamma=gamma,
        stage1=stage1,
        stage2=stage2,
        dynamic_beta=dynamic_beta,
        solver=solver,
        stage1_inclusive=stage1_inclusive,
        lloyd_iters=lloyd_iters,
        reference_free=True,
    )


def topk(
    logps: PreferenceLogps,
    *,
    k: int = 3,
    beta: float = 1.0,
    alpha: float = 0.5,
    gamma: float = 6.0,
    dynamic_beta: bool = False,
    reference_free: bool = False,
) -> ObjectiveOutput:
    """Top-K baseline (Table 7) on DMPO: the k negatives with the highest L_k.

    Uses a constant β0 unless ``dynamic_beta`` (then β_j with D = the other negatives).

    Args:
        logps: forward-pass results.
        k: negatives kept per example (the paper tries 2, 3 and 4).
        beta: β0.
        alpha: α of the optional dynamic β.
        gamma: γ of the optional dynamic β.
        dynamic_beta: give each kept negative its dual-margin β_j.
        reference_free: use r = L in the loss.
    """
    valid = logps.valid
    selected = select_top_k(logps.policy_rejected, logps.mask, k=k)
    margins = compute_dynamic_beta(
        logps.policy_chosen,
        logps.policy_rejected,
        selected,
        logps.mask,
        beta0=beta,
        alpha=alpha,
        gamma=gamma,
        check_finite=False,  # select_top_k has just checked the same tensors
    )
    beta_used = margins.beta if dynamic_beta else torch.where(selected, beta, 0.0).to(margins.beta)
    metrics = selection_metrics(selected, None, valid)
    metrics.update(beta_metrics(beta_used, margins.delta_p, margins.delta_n, selected))
    return _reweighted(
        logps,
        _DMPO,
        selected=selected,
        beta=beta,
        beta_used=beta_used,
        reference_free=reference_free,
        metrics=metrics,
    )


def beta_dpo(
    logps: PreferenceLogps,
    *,
    beta: float = 1.0,
    a: float = 0.6,
    stage1: bool = True,
    stage2: bool = True,
    solver: Solver = "exact",
    stage1_inclusive: bool = False,
    lloyd_iters: int = 20,
    filter_ratio: float = 0.0,
    reference_free: bool = False,
    state: BetaDPOState | None = None,
) -> ObjectiveOutput:
    """β-DPO's batch-level β on DMPO over the boundary negatives (paper §3.3 baseline).

    The paper reports that plugging β-DPO's β into the boundary-negative selection
    (instead of the dual-margin β_j) costs 0.32%; this reproduces that variant. The
    example margin is M_i = mean_{j∈B}(r_w − r_j) (log-ratio units), and every
    selected negative of the batch gets the same
    β = β0 · (1 + a · (mean M − M_0)), see :func:`~recpo.objectives.beta.beta_dpo_beta`.
    ``stage1 = stage2 = False`` gives plain β-DPO on DMPO.

    Args:
        logps: forward-pass results.
        beta: β0.
        a: β-DPO's scaling factor (0.6 in β-DPO's example).
        stage1: Stage I selection.
        stage2: Stage II selection.
        solver: Stage II solver.
        stage1_inclusive: Stage I with ``>=``.
        lloyd_iters: iterations of the Lloyd solver.
        filter_ratio: β-DPO's data filtering (0.2 in β-DPO; 0 disables it). Filtered
            examples get loss 0.
        reference_free: use r = L.
        state: running M_0/σ (updated in place); None uses M_0 = 0.
    """
    valid = logps.valid
    selection = select_boundary_negatives(
        logps.policy_rejected,
        logps.policy_chosen,
        logps.mask,
        stage1=stage1,
        stage2=stage2,
        solver=solver,
        stage1_inclusive=stage1_inclusive,
        lloyd_iters=lloyd_iters,
    )
    selected = selection.selected
    chosen, rejected = logratios(logps, reference_free)
    rows = selected.any(dim=-1)
    gaps = torch.where(selected, chosen.detach()[:, None] - rejected.detach(), 0.0)
    margins = gaps.sum(dim=-1) / selected.sum(dim=-1).clamp(min=1)
    batch = beta_dpo_beta(margins, rows, beta0=beta, a=a, state=state, filter_ratio=filter_ratio)
    beta_used = torch.where(selected, batch.beta, 0.0).to(rejected.dtype)
    metrics = selection_metrics(selected, selection.stage, valid)
    metrics["beta/mean"] = masked_mean(beta_used, selected)
    metrics["beta/std"] = masked_std(beta_used, selected)
    metrics["beta_dpo/threshold"] = batch.threshold.detach().float()
    metrics["beta_dpo/kept_share"] = masked_mean(batch.keep, rows)
    return _reweighted(
        logps,
        _DMPO,
        selected=selected,
        beta=beta,
        beta_used=beta_used,
        reference_free=reference_free,
        metrics=metrics,
        keep=batch.keep,
    )
