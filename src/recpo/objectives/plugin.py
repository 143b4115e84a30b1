"""DynamicPO as a plug-in to DMPO, S-DPO and MPPO, plus the Top-K and β-DPO baselines.

One mechanism for every base objective (:class:`Plugin`): a selector picks the mask
of negatives that enter the loss, a per-negative β replaces the constant one, and
the base objective's :meth:`~recpo.objectives.losses.Objective.pair_losses` is
applied unchanged to (scores, β, mask):

* DMPO:  −log σ( Σ_{j∈B} β_j (r_w − r_j) / |B| )        (the official DynamicPO loss)
* S-DPO: −log σ( −log Σ_{j∈B} exp(β_j (r_j − r_w)) )
* MPPO:  −log σ( Σ_{j∈B} (β_j/β0) (p_w − p_j) )           (MPPO has no β, so β_j/β0
  weights each pair term; with β0 = 1 this is the official exploratory-study code)

A plug-in objective is a dataclass that inherits a selector, a β rule and, last,
the base objective, whose ``compute`` the :class:`Plugin` one overrides; its
hyperparameters are the fields of the three. DynamicPO is
``DynamicPOPlugin = BoundarySelector + DualMarginBeta`` on DMPO, S-DPO or MPPO
(:class:`DynamicPO`, :class:`DynamicPOSDPO`, :class:`DynamicPOMPPO`); the Top-K and
β-DPO baselines swap the selector or the β rule (:class:`TopK`, :class:`BetaDPO`).
Selection and β always read the *policy* log-likelihoods L (summed over tokens), as
the official code does, whatever the objective scores with (log-ratios or MPPO's
mean-token probabilities). Both are constants for the gradient: negatives outside B
get exactly zero gradient. Reported rewards stay β0·r (MPPO: p) for every negative
so that win rates compare across methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recpo import metric_names as names
from recpo.objectives.beta import BetaDPOState, beta_dpo_beta
from recpo.objectives.beta import dynamic_beta as dual_margin_beta
from recpo.objectives.diagnostics import beta_metrics, masked_mean, masked_std, selection_metrics
from recpo.objectives.losses import DMPO, MPPO, SDPO, Objective, objective_output
from recpo.objectives.selection import Solver, select_boundary_negatives, select_top_k
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps
from recpo.settings import AT_LEAST_ONE, NON_NEGATIVE, SHARE, setting

# What a β rule returns: β ``(B, K)`` of the selected negatives (0 elsewhere), its
# metrics, and the examples kept in the loss ``(B,)`` (None: all).
NegativeBeta = tuple[Tensor, dict[str, Tensor], Tensor | None]


class Plugin(Objective):
    """Select negatives, give each its β, apply the base objective to them.

    A subclass provides :meth:`select` and :meth:`negative_beta` (from the mixins
    below) and inherits the base objective last, which supplies the scores, the
    pair losses and β0.
    """

    def select(self, logps: PreferenceLogps) -> tuple[Tensor, Tensor | None]:
        """``(B, K)`` bool selection and ``(B,)`` rule codes (None without Stage I and II)."""
        raise NotImplementedError

    def negative_beta(self, logps: PreferenceLogps, selected: Tensor) -> NegativeBeta:
        raise NotImplementedError

    def compute(self, logps: PreferenceLogps) -> ObjectiveOutput:
        selected, rule = self.select(logps)
        beta, beta_diagnostics, keep = self.negative_beta(logps, selected)
        metrics = selection_metrics(selected, rule, logps.valid)
        metrics.update(beta_diagnostics)
        chosen, rejected = self.scores(logps)
        losses = self.pair_losses(chosen, rejected, beta, selected)
        if keep is not None:
            losses = torch.where(keep, losses, 0.0)
        return objective_output(logps, losses, self.beta * chosen, self.beta * rejected, metrics)


@dataclass(frozen=True, kw_only=True)
class BoundarySelector(Plugin):
    """DynamicPO's boundary negatives B, see
    :func:`~recpo.objectives.selection.select_boundary_negatives`.

    Args:
        stage1: Stage I (negatives with L_k > L_w); False is the "w/o Stage (I)" ablation.
        stage2: Stage II (top cluster of 1-D k-means, k = 3, when Stage I selects
            nothing); False is "w/o Stage (II)".
        solver: Stage II k-means solver, ``"exact"`` or ``"lloyd"``.
        stage1_inclusive: Stage I with ``>=`` as in the official code.
        lloyd_iters: iterations of the Lloyd solver.
    """

    stage1: bool = True
    stage2: bool = True
    solver: Solver = "exact"
    stage1_inclusive: bool = False
    lloyd_iters: int = setting(20, **AT_LEAST_ONE)

    def select(self, logps: PreferenceLogps) -> tuple[Tensor, Tensor | None]:
        selection = select_boundary_negatives(
            logps.policy_rejected,
            logps.policy_chosen,
            logps.mask,  # None (all valid) takes the selector's faster path
            stage1=self.stage1,
            stage2=self.stage2,
            solver=self.solver,
            stage1_inclusive=self.stage1_inclusive,
            lloyd_iters=self.lloyd_iters,
        )
        return selection.selected, selection.rule


@dataclass(frozen=True, kw_only=True)
class DualMarginBeta(Plugin):
    """DynamicPO's per-negative β_j, see :func:`~recpo.objectives.beta.dynamic_beta`.

    Args:
        alpha: α, adjustment intensity of β_j.
        gamma: γ, intrinsic preference margin (paper 6.0; the official code hard-codes 2.0).
        dynamic_beta: per-negative β_j; False uses β0 ("w/o dynamic β").
    """

    # β_j = β0 (1 + α tanh(.)) stays in (β0 (1 − α), β0 (1 + α)): α in [0, 1) keeps every
    # β_j > 0 (α ≥ 1 lets it reach 0, α < 0 turns the adjustment around). γ, a margin in
    # log-likelihood units, may be any finite real (the paper tries 2 to 10).
    alpha: float = setting(0.5, low=0, high=1, high_open=True)
    gamma: float = 6.0
    dynamic_beta: bool = True

    def negative_beta(self, logps: PreferenceLogps, selected: Tensor) -> NegativeBeta:
        # δp, δn are computed even without dynamic β: they are logged by every variant.
        margins = dual_margin_beta(
            logps.policy_chosen,
            logps.policy_rejected,
            selected,
            logps.mask,
            beta0=self.beta,
            alpha=self.alpha,
            gamma=self.gamma,
            check_finite=False,  # the selector has just checked the same tensors
        )
        beta = margins.beta
        if not self.dynamic_beta:
            beta = torch.where(selected, self.beta, 0.0).to(margins.beta)
        return beta, beta_metrics(beta, margins.delta_p, margins.delta_n, selected), None


@dataclass(frozen=True, kw_only=True)
class DynamicPOPlugin(BoundarySelector, DualMarginBeta):
    """DynamicPO: the boundary negatives B, each with its dual-margin β_j.

    ``stage1 = stage2 = dynamic_beta = False`` gives exactly the base objective.
    """


@dataclass(frozen=True, kw_only=True)
class DynamicPO(DynamicPOPlugin, DMPO):
    """DynamicPO on DMPO: −log σ( Σ_{j∈B} β_j (r_w − r_j) / |B| ); ``beta`` is β0.

    Worked example (β0 = 1, α = 0.5, γ = 6, reference-free): L_w = −5,
    L = [−4, −10, −12]. Stage I selects j = 0 (−4 > −5); β_0 = 1 + 0.5·tanh(−1.75)
    = 0.529312 (see ``dynamic_beta``); logit = 0.529312 · (−5 − (−4)) / 1 = −0.529312,
    loss = log(1 + e^{0.529312}) = 0.992423.
    """

    label = "DynamicPO"
    base = paired_with = DMPO
    order = (3, 0)


@dataclass(frozen=True, kw_only=True)
class DynamicPOSDPO(DynamicPOPlugin, SDPO):
    """DynamicPO on S-DPO: −log σ( −log Σ_{j∈B} exp(β_j (r_j − r_w)) ); ``beta`` is β0."""

    label = "DynamicPO-S-DPO"
    base = paired_with = SDPO
    order = (3, 1)


@dataclass(frozen=True, kw_only=True)
class DynamicPOMPPO(DynamicPOPlugin, MPPO):
    """DynamicPO on MPPO: −log σ( Σ_{j∈B} w_j (p_w − p_j) ), w_j = β_j/β0.

    MPPO has neither β nor a reference model, so β_j enters as the relative weight
    w_j = 1 + α·tanh(...) of each pair term (independent of β0, hence no ``beta``);
    ``beta/mean`` then logs w_j.
    """

    label = "DynamicPO-MPPO"
    base = paired_with = MPPO
    order = (3, 2)


@dataclass(frozen=True, kw_only=True)
class TopK(DualMarginBeta, DMPO):
    """Top-K baseline (Table 7) on DMPO: the k negatives with the highest L_k.

    Uses a constant β0 unless ``dynamic_beta`` (then β_j with D = the other negatives).

    Args:
        k: negatives kept per example (the paper tries 2, 3 and 4).
        dynamic_beta: give each kept negative its dual-margin β_j.
    """

    label = "Top-K"
    label_keys = ("k",)
    paired_with = DMPO
    variant_of = DynamicPO
    order = (4, 0)
    k: int = setting(3, **AT_LEAST_ONE)
    dynamic_beta: bool = False

    def negatives_problem(self, k: int) -> str | None:
        if self.k > k:
            return f"Top-K keeps objective.k={self.k} negatives, more than the {k} drawn"
        return None

    def select(self, logps: PreferenceLogps) -> tuple[Tensor, Tensor | None]:
        return select_top_k(logps.policy_rejected, logps.mask, k=self.k), None


@dataclass(frozen=True, kw_only=True)
class BetaDPO(BoundarySelector, DMPO):
    """β-DPO's batch-level β on DMPO over the boundary negatives (paper §3.3 baseline).

    The paper reports that plugging β-DPO's β into the boundary-negative selection
    (instead of the dual-margin β_j) costs 0.32%; this reproduces that variant. The
    example margin is M_i = mean_{j∈B}(r_w − r_j) (log-ratio units), and every
    selected negative of the batch gets the same
    β = β0 · (1 + a · (mean M − M_0)), see :func:`~recpo.objectives.beta.beta_dpo_beta`.
    ``stage1 = stage2 = False`` gives plain β-DPO on DMPO.

    Args:
        a: β-DPO's scaling factor (0.6 in β-DPO's example).
        filter_ratio: β-DPO's data filtering (0.2 in β-DPO; 0 disables it). Filtered
            examples get loss 0.
        state: running M_0/σ (updated in place by every call); None uses M_0 = 0.
    """

    label = "β-DPO"
    paired_with = DMPO
    order = (5, 0)
    a: float = setting(0.6, **NON_NEGATIVE)
    filter_ratio: float = setting(0.0, **SHARE)
    state: BetaDPOState | None = None

    def negative_beta(self, logps: PreferenceLogps, selected: Tensor) -> NegativeBeta:
        chosen, rejected = self.scores(logps)
        rows = selected.any(dim=-1)
        gaps = torch.where(selected, chosen.detach()[:, None] - rejected.detach(), 0.0)
        margins = gaps.sum(dim=-1) / selected.sum(dim=-1).clamp(min=1)
        batch = beta_dpo_beta(
            margins,
            rows,
            beta0=self.beta,
            a=self.a,
            state=self.state,
            filter_ratio=self.filter_ratio,
        )
        beta = torch.where(selected, batch.beta, 0.0).to(rejected.dtype)
        metrics = {
            names.BETA_MEAN: masked_mean(beta, selected),
            names.BETA_STD: masked_std(beta, selected),
            "beta_dpo/threshold": batch.threshold.detach().float(),
            "beta_dpo/kept_share": masked_mean(batch.keep, rows),
        }
        return beta, metrics, batch.keep


# The objectives with their default hyperparameters (the Hydra targets), also usable
# as functions: ``dynamicpo(logps)``, ``dynamicpo(logps, gamma=2.0, stage1=False)``.
dynamicpo = DynamicPO()
dynamicpo_sdpo = DynamicPOSDPO()
dynamicpo_mppo = DynamicPOMPPO()
topk = TopK()
beta_dpo = BetaDPO()
