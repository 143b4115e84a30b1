"""Per-negative dual-margin β (DynamicPO §3.3) and the batch-level β of β-DPO.

Both return constants for the backward pass: β scales the loss, it is never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recpo.objectives.types import require_finite


@dataclass
class DynamicBeta:
    """Dual-margin β of every selected negative (0 at unselected positions).

    Attributes:
        beta: ``(B, K)`` β_j, detached.
        delta_p: ``(B, K)`` positive-to-boundary margin δp = L_w − L_j.
        delta_n: ``(B, K)`` boundary-to-easy margin δn = L_j − mean of the others.
    """

    beta: Tensor
    delta_p: Tensor
    delta_n: Tensor


def dynamic_beta(
    chosen: Tensor,
    logps: Tensor,
    selected: Tensor,
    mask: Tensor | None = None,
    *,
    beta0: float = 1.0,
    alpha: float = 0.5,
    gamma: float = 6.0,
    check_finite: bool = True,
) -> DynamicBeta:
    """β_j = β0 · (1 + α · tanh((δp − δn − γ) / (|δp| + |δn|))) for each selected negative j.

    δp = L_w − L_j and δn = L_j − mean_{i∈D} L_i, where D is the set of valid
    negatives that were *not* selected (D := the selected set when every valid
    negative was selected). All L are policy log-likelihoods, as in the official code.

    The denominator is zero only when δp = δn = 0; the tanh term then takes its limit
    ``sign(δp − δn − γ) = sign(−γ)``, i.e. β0(1 − α) for γ > 0 (what the official
    code computes through ``−γ / 0 = −inf``) and β0 for γ = 0 (where it gives NaN).

    Worked example (β0 = 1, α = 0.5, γ = 6): L_w = −5, negatives L = [−4, −10, −12],
    only j = 0 selected. D = {−10, −12}, mean −11. δp = −5 − (−4) = −1,
    δn = −4 − (−11) = 7, ratio = (−1 − 7 − 6) / (1 + 7) = −1.75,
    β_0 = 1 + 0.5·tanh(−1.75) = 1 − 0.5·0.941376 = 0.529312.

    Args:
        chosen: ``(B,)`` policy log-likelihood L_w of the positive.
        logps: ``(B, K)`` policy log-likelihoods L_k of the negatives.
        selected: ``(B, K)`` bool boundary set B.
        mask: ``(B, K)`` bool validity; None means all valid.
        beta0: base β0.
        alpha: adjustment intensity α.
        gamma: intrinsic preference margin γ (paper: 6.0; 2.0 is the value hard-coded
            in the official code).
        check_finite: validate the inputs (callers that already ran
            :func:`~recpo.objectives.selection.select_boundary_negatives` on the same
            tensors, which checks them, may skip it).

    Returns:
        β_j, δp and δn, detached, at least float32, zero where not selected.

    Raises:
        ValueError: on CPU, when a valid log-prob is ±inf or NaN.
    """
    work = torch.promote_types(logps.dtype, torch.float32)
    lw, lk = chosen.detach(), logps.detach()
    if lk.dtype != work:  # bf16 / fp16 log-probs: compute β in float32
        lw, lk = lw.to(work), lk.to(work)
    if check_finite:
        require_finite(lk, mask, "negative log-probs")
        require_finite(lw, None, "chosen log-probs")
    if mask is None:
        rest = ~selected
    else:
        selected = selected & mask
        rest = mask & ~selected

    easy = torch.where(rest.any(dim=-1, keepdim=True), rest, selected)
    # A row with nothing selected divides 0 by 0 here; its NaN is masked out below.
    easy_mean = torch.where(easy, lk, 0.0).sum(dim=-1) / easy.sum(dim=-1)
    delta_p = lw[:, None] - lk
    delta_n = lk - easy_mean[:, None]
    # |δp| + |δn| = 0 only when δp = δn = 0, where the numerator is exactly -γ: IEEE
    # division then gives ∓inf and tanh its limit sign(-γ) (β0(1 - α) for γ > 0, as
    # the official code computes). Only γ = 0 (0/0) needs the limit set by hand.
    ratio = (delta_p - delta_n - gamma) / (delta_p.abs() + delta_n.abs())
    if gamma == 0:
        ratio = ratio.nan_to_num_(nan=0.0)
    beta = ratio.tanh_().mul_(alpha * beta0).add_(beta0)
    unselected = ~selected
    return DynamicBeta(
        beta=beta.masked_fill_(unselected, 0.0),
        delta_p=delta_p.masked_fill_(unselected, 0.0),
        delta_n=delta_n.masked_fill_(unselected, 0.0),
    )


def _masked_mean_std(values: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    count = rows.sum()
    mean = torch.where(rows, values, 0.0).sum() / count.clamp(min=1)
    spread = torch.where(rows, (values - mean).square(), 0.0).sum()
    std = (spread / (count - 1).clamp(min=1)).sqrt()  # unbiased, 0 for a single row
    return mean, std


class BetaDPOState:
    """Running mean and std of the batch reward margins, β-DPO's M_0 and σ.

    Updated in place by every call of :func:`beta_dpo_beta` (exponential moving
    average, momentum 0.9 in β-DPO), before β is computed, as in the β-DPO code.
    Statistics are per process: unlike β-DPO, nothing is all-gathered under DDP.
    Hydra builds one instance per run (``state:`` in ``conf/objective/beta_dpo.yaml``).

    Args:
        momentum: weight of the previous value in the moving average.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        self.momentum = momentum
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def update(self, margins: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Fold a batch of margins ``(B,)`` (rows where ``rows`` is True) into the averages."""
        margins = margins.detach()
        rows = rows if rows is not None else torch.ones_like(margins, dtype=torch.bool)
        batch_mean, batch_std = _masked_mean_std(margins, rows)
        if self.mean is None or self.std is None:
            self.mean = torch.zeros_like(batch_mean)
            self.std = torch.zeros_like(batch_std)
        keep = self.momentum
        self.mean = keep * self.mean.to(batch_mean) + (1 - keep) * batch_mean
        self.std = keep * self.std.to(batch_std) + (1 - keep) * batch_std
        return self.mean, self.std

    def state_dict(self) -> dict[str, Tensor | float | None]:
        return {"momentum": self.momentum, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, Tensor | float | None]) -> None:
        self.momentum = float(state["momentum"])  # type: ignore[arg-type]
        self.mean = state["mean"]  # type: ignore[assignment]
        self.std = state["std"]  # type: ignore[assignment]


@dataclass
class BatchBeta:
    """β-DPO's batch-level β.

    Attributes:
        beta: ``()`` β for the whole batch, detached.
        keep: ``(B,)`` bool, the examples kept by β-guided filtering.
        threshold: ``()`` the reference margin M_0 the batch is compared to.
    """

    beta: Tensor
    keep: Tensor
    threshold: Tensor


def beta_dpo_beta(
    margins: Tensor,
    rows: Tensor | None = None,
    *,
    beta0: float = 1.0,
    a: float = 0.6,
    state: BetaDPOState | None = None,
    filter_ratio: float = 0.0,
    generator: torch.Generator | None = None,
) -> BatchBeta:
    """β_batch = max(β0 · (1 + a · (mean_{kept} M_i − M_0)), 1e-3), after β-DPO (Wu et al. 2024).

    ``M_i`` is the implicit reward margin of example i in log-ratio units (without β).
    With a ``state``, M_0 and σ are its running averages, updated with this batch
    first; without one, M_0 = 0 (chosen and negatives equally preferred) and σ is the
    batch std. With ``filter_ratio > 0``, β-DPO's data filtering keeps
    ``max(1, int(n·(1 − filter_ratio)))`` examples sampled without replacement with
    probability ∝ exp(−(M_i − M_0)² / 2σ²) (β-DPO uses 0.2); the rest get no loss.

    Worked example: β0 = 1, a = 0.6, no state, margins [1, 3] → M_0 = 0, mean 2,
    β = 1 · (1 + 0.6 · 2) = 2.2.

    Args:
        margins: ``(B,)`` reward margins M_i.
        rows: ``(B,)`` bool, rows that have a margin (at least one negative); None = all.
        beta0: base β0.
        a: scaling factor of the margin deviation.
        state: running statistics; None for the stateless form.
        filter_ratio: share of the batch to filter out (0 disables filtering).
        generator: RNG for the filtering draw.

    Returns:
        The batch β, the kept rows and M_0, all detached.
    """
    margins = margins.detach()
    rows = rows if rows is not None else torch.ones_like(margins, dtype=torch.bool)
    if state is not None:
        threshold, sigma = state.update(margins, rows)
    else:
        threshold = torch.zeros((), dtype=margins.dtype, device=margins.device)
        sigma = _masked_mean_std(margins, rows)[1]
    keep = rows
    if filter_ratio > 0:
        num_keep = max(1, int(margins.shape[0] * (1 - filter_ratio)))
        z = (margins - threshold) / sigma.clamp(min=1e-6)
        # The epsilon keeps the draw defined when every weight underflows or too few
        # rows have a margin; rows without a margin are dropped from `keep` below.
        weights = torch.where(rows, torch.exp(-0.5 * z.square()), 0.0) + 1e-12
        drawn = torch.multinomial(weights, num_keep, replacement=False, generator=generator)
        keep = torch.zeros_like(rows).scatter(0, drawn, True) & rows
    kept_mean = torch.where(keep, margins, 0.0).sum() / keep.sum().clamp(min=1)
    beta = (beta0 * (1 + a * (kept_mean - threshold))).clamp(min=1e-3)
    return BatchBeta(beta=beta, keep=keep, threshold=threshold)
