"""Multi-negative preference objectives: DPO, DMPO, S-DPO and MPPO.

Two layers:

* ``*_losses(chosen, rejected, beta, mask)`` take the per-answer scores (log-ratios
  r, or MPPO's probabilities p) of the chosen answer ``(B,)`` and the negatives
  ``(B, K)``, a per-negative coefficient (β, or MPPO's weight; a detached ``(B, K)``
  tensor or a float) and a ``(B, K)`` bool mask, and return ``(B,)`` losses. Only
  masked-in negatives enter the loss; the others receive exactly zero gradient. The
  DynamicPO plug-in (:mod:`recpo.objectives.plugin`) reuses them with its own
  mask and β_j.
* :class:`DPO`, :class:`DMPO`, :class:`SDPO` and :class:`MPPO` are the plain
  objectives (:class:`Objective`): their fields are the hyperparameters, they declare
  whether they need a reference model and token counts, and ``objective(logps:
  PreferenceLogps) -> ObjectiveOutput``. ``dpo``, ``dmpo``, ``sdpo`` and ``mppo``
  are these objectives with the default hyperparameters and the Hydra targets of
  ``conf/objective/{dpo,dmpo,sdpo,mppo}.yaml``.

Notation: L = summed answer log-likelihood, r = L − L_ref (r = L when
``reference_free``), β the inverse temperature (β0 = 1 in the paper).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from recpo.objectives.diagnostics import boundary_metrics, reward_metrics
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps, require_finite
from recpo.settings import POSITIVE, check_fields, setting


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


class Objective:
    """A preference objective with its hyperparameters: ``objective(logps) -> ObjectiveOutput``.

    Concrete objectives are frozen keyword-only dataclasses whose fields are their
    hyperparameters, the keys of ``conf/objective/<name>.yaml``; the lower-case name
    (``dmpo``) is the objective with its defaults, Hydra's ``_target_``. Each declares
    what it reads from :class:`PreferenceLogps`: ``needs_reference`` (``ref_chosen`` /
    ``ref_rejected``) and ``needs_token_counts`` (``chosen_tokens`` /
    ``rejected_tokens``), so the caller knows whether to run a reference model.

    A multi-negative objective scores the answers (:meth:`scores`), turns scores, a
    per-negative β and a mask into losses (:meth:`pair_losses`) and reports rewards
    β·score; :meth:`compute` applies it with a constant β to every valid negative.
    """

    needs_token_counts: ClassVar[bool] = False
    beta: float  # the β of the loss and the scale of the rewards

    # How reports name, order and compare the results of this objective: recpo.report
    # imports the class a job's ``objective._target_`` names and reads these, so a new
    # objective needs nothing in the report. Subclasses inherit them: set them anew.
    label: ClassVar[str] = ""  # display name ("": the target's own name)
    label_keys: ClassVar[tuple[str, ...]] = ()  # hyperparameters shown in the label: Top-K (k=3)
    # The plain objective DynamicPO is plugged into (DynamicPO on DMPO: DMPO); set for the
    # plug-ins only, whose ablations the report compares with the full method.
    base: ClassVar[type[Objective] | None] = None
    # The plain objective each result is compared with, seed by seed, in the paired tables.
    paired_with: ClassVar[type[Objective] | None] = None
    # The full method this one changes a part of (Top-K swaps DynamicPO's selection).
    variant_of: ClassVar[type[Objective] | None] = None
    # Place in tables: (group, place in the group); groups 2 plain objectives, 3 DynamicPO
    # plug-ins, 4 selection baselines, 5 the rest (the report puts baselines and SFT first).
    order: ClassVar[tuple[int, int]] = (5, 0)

    def __post_init__(self) -> None:
        # Types and ranges of the hyperparameters (recpo.settings): a bad value fails
        # when the objective is built, which the entry point does before any work.
        check_fields(self)

    @property
    def needs_reference(self) -> bool:
        raise NotImplementedError

    def negatives_problem(self, k: int) -> str | None:
        """Why this objective cannot train with K = ``k`` negatives per row (None: it can)."""
        return None

    @overload
    def __call__(self, logps: PreferenceLogps, /, **hyperparameters: Any) -> ObjectiveOutput: ...

    @overload
    def __call__(self, logps: None = None, /, **hyperparameters: Any) -> Objective: ...

    def __call__(
        self, logps: PreferenceLogps | None = None, /, **hyperparameters: Any
    ) -> ObjectiveOutput | Objective:
        """The objective on a batch; keyword arguments change hyperparameters first.

        ``dmpo(logps)`` evaluates DMPO; ``dmpo(logps, beta=2.0)`` evaluates
        ``DMPO(beta=2.0)``; without a batch, ``dmpo(beta=2.0)`` returns that objective.
        The last form is how Hydra builds ``conf/objective/dmpo.yaml``
        (``_target_: recpo.objectives.losses.dmpo`` and the hyperparameters as keys).
        """
        objective = dataclasses.replace(self, **hyperparameters) if hyperparameters else self
        return objective if logps is None else objective.compute(logps)

    def scores(self, logps: PreferenceLogps) -> tuple[Tensor, Tensor]:
        """Differentiable scores of the chosen answer ``(B,)`` and the negatives ``(B, K)``."""
        raise NotImplementedError

    def pair_losses(
        self, chosen: Tensor, rejected: Tensor, beta: Tensor | float, mask: Tensor
    ) -> Tensor:
        """``(B,)`` losses over the masked-in negatives with per-negative β ``(B, K)``."""
        raise NotImplementedError

    def compute(self, logps: PreferenceLogps) -> ObjectiveOutput:
        chosen, rejected = self.scores(logps)
        losses = self.pair_losses(chosen, rejected, self.beta, logps.valid)
        return objective_output(logps, losses, self.beta * chosen, self.beta * rejected)


@dataclass(frozen=True, kw_only=True)
class LogRatioObjective(Objective):
    """An objective on log-ratios r = L − L_ref against a reference model.

    Args:
        beta: β.
        reference_free: use r = L (no reference model).
    """

    beta: float = setting(1.0, **POSITIVE)
    reference_free: bool = False

    @property
    def needs_reference(self) -> bool:
        return not self.reference_free

    def scores(self, logps: PreferenceLogps) -> tuple[Tensor, Tensor]:
        return logratios(logps, self.reference_free)


class DPO(LogRatioObjective):
    """DPO with one negative: −log σ(β (r_w − r_1)).

    Takes K = 1 (a masked negative gives loss 0) and raises ``ValueError`` otherwise.

    Worked example: β = 1, L_w = −2, L_ref,w = −3, L_1 = −4, L_ref,1 = −3:
    r_w = 1, r_1 = −1, loss = −log σ(2) = log(1 + e^{−2}) = 0.126928.
    """

    label = "DPO"
    order = (2, 0)

    def negatives_problem(self, k: int) -> str | None:
        return None if k == 1 else "dpo takes exactly one negative per row (K=1)"

    def compute(self, logps: PreferenceLogps) -> ObjectiveOutput:
        if logps.num_negatives != 1:
            raise ValueError(
                f"dpo takes exactly one negative per example (K=1); got K={logps.num_negatives}. "
                "Use dmpo or sdpo for several negatives."
            )
        chosen, rejected = self.scores(logps)
        valid = logps.valid[:, 0]
        margin = torch.where(valid, chosen - rejected[:, 0], 0.0)
        losses = torch.where(valid, -F.logsigmoid(self.beta * margin), 0.0)
        return objective_output(logps, losses, self.beta * chosen, self.beta * rejected)


class DMPO(LogRatioObjective):
    """DMPO: −log σ(β r_w − (1/K) Σ_k β r_k) over the valid negatives.

    Worked example: β = 1, reference-free, L_w = −1, L = [−2, −4]:
    logit = −1 − (−2 − 4)/2 = 2, loss = log(1 + e^{−2}) = 0.126928.
    """

    label = "DMPO"
    order = (2, 1)
    pair_losses = staticmethod(dmpo_losses)


class SDPO(LogRatioObjective):
    """S-DPO: −log σ(−log Σ_k exp(β (r_k − r_w))) over the valid negatives.

    Worked example: β = 1, reference-free, L_w = 0, L = [−1, −1]:
    Σ exp = 2e^{−1} = 0.735759, −log of it = 0.306853,
    loss = log(1 + e^{−0.306853}) = 0.551445.
    """

    label = "S-DPO"
    order = (2, 2)
    pair_losses = staticmethod(sdpo_losses)


@dataclass(frozen=True, kw_only=True)
class MPPO(Objective):
    """MPPO: −log σ(K p_w − Σ_k p_k), p(y) = exp(mean token log-prob of y).

    No reference model, no β and no hyperparameter; rewards are the probabilities p.
    Reads the answer token counts. β is the constant 1, so a per-negative β_j passed
    to :meth:`pair_losses` (the DynamicPO plug-in) is the relative weight β_j/β0.

    Worked example: L_w = −1 over 2 tokens (p_w = e^{−0.5} = 0.606531), negatives
    L = [−2, −6] over [2, 3] tokens (p = e^{−1}, e^{−2} = 0.367879, 0.135335):
    logit = 2·0.606531 − 0.503215 = 0.709847, loss = log(1 + e^{−0.709847}) = 0.399930.
    """

    needs_token_counts: ClassVar[bool] = True
    label = "MPPO"
    order = (2, 3)
    beta: ClassVar[float] = 1.0

    @property
    def needs_reference(self) -> bool:
        return False

    def scores(self, logps: PreferenceLogps) -> tuple[Tensor, Tensor]:
        return mean_token_probs(logps)

    pair_losses = staticmethod(mppo_losses)


# The objectives with their default hyperparameters (the Hydra targets), also usable
# as functions: ``dmpo(logps)``, ``dmpo(logps, beta=2.0, reference_free=True)``.
dpo = DPO()
dmpo = DMPO()
sdpo = SDPO()
mppo = MPPO()
