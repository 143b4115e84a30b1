"""Boundary-negative selection (DynamicPO §3.2) and the Top-K baseline (Table 7).

Everything here works on the whole ``(B, K)`` tensor at once: no Python loop over
examples, no ``.item()``, no host synchronisation (the finiteness check raises on
CPU and becomes an asynchronous device assertion elsewhere, see
:func:`~recpo.objectives.types.require_finite`).

Stage II clusters the negatives' log-likelihoods into three groups with 1-D k-means.
In one dimension every optimal k-means clustering is made of contiguous runs of the
sorted values, so the exact optimum is found by scoring every pair of split points
``0 <= i <= j < n`` at once: ``O(K^2)`` candidates per row (190 for K = 19), one
matrix product for the cluster sums of all of them, about twenty tensor ops for the
whole batch. Minimising the within-cluster sum of squares (SSE) is the same as
maximising ``sum_c S_c^2 / n_c`` over the clusters (``S_c`` the sum of cluster c,
after shifting the row by its minimum), which is what gets scored, in float64.

Conventions shared by both solvers:

* A cluster never splits equal values: split points are only placed between two
  distinct sorted values. Some optimal clustering always has this property, so
  nothing is lost, and ties in the data can never make the selection depend on the
  order of the negatives.
* With fewer than three distinct valid values a cluster may be empty; the selected
  cluster is the highest non-empty one. Hence K = 1 (or one valid negative) selects
  it, K = 2 selects the larger value (both if equal), and all-equal values are all
  selected, exactly as ``KMeans(min(3, K))`` does in the authors' code.
* Exact ties between different clusterings of equal SSE (e.g. ``[0, 1, 2, 3]``)
  go to the first candidate in ``(i, j)`` order, i.e. to the smaller first split.
* Masked negatives are never clustered and never selected; a row without valid
  negatives selects nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from recpo.objectives.types import require_finite

#: ``rule`` of a row where neither Stage I nor Stage II fired: all valid negatives kept.
RULE_ALL = 0
#: Stage I fired: the negatives more likely than the positive were selected.
RULE_VIOLATION = 1
#: Stage II fired: the top k-means cluster was selected.
RULE_CLUSTER = 2

Solver = Literal["exact", "lloyd"]


@dataclass
class Clustering1D:
    """Result of a batched 1-D k-means with k = 3.

    Attributes:
        labels: ``(B, K)`` long cluster index in ascending centroid order (0 lowest,
            2 highest); -1 for masked entries. With fewer than three distinct values
            some clusters are empty (the exact solver then leaves the lower ones empty,
            so its top cluster is always label 2).
        centroids: ``(B, 3)`` cluster means in ascending order, NaN for an empty cluster.
        sse: ``(B,)`` within-cluster sum of squared deviations.
        top: ``(B, K)`` bool, valid members of the highest non-empty cluster.
    """

    labels: Tensor
    centroids: Tensor
    sse: Tensor
    top: Tensor


@dataclass
class BoundarySelection:
    """Which negatives the selector keeps.

    Attributes:
        selected: ``(B, K)`` bool, the boundary set B of each row (a subset of the valid
            negatives; non-empty for every row with at least one valid negative).
        rule: ``(B,)`` long, :data:`RULE_VIOLATION`, :data:`RULE_CLUSTER` or
            :data:`RULE_ALL`, which rule produced the row's selection.
    """

    selected: Tensor
    rule: Tensor


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps the SSE comparison exact enough to agree with brute force; MPS has none.
    return torch.float32 if device.type == "mps" else torch.float64


def _sorted_centred(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Sort the valid values of each row ascending, masked ones last.

    Returns:
        sorted_values ``(B, K)`` (masked: +inf), order ``(B, K)`` (sorting permutation),
        n ``(B,)`` valid count, mean ``(B,)`` of the valid values, centred ``(B, K)``
        sorted values minus the mean (0 past position n).
    """
    work = values.to(_work_dtype(values.device))
    sorted_values, order = torch.where(valid, work, torch.inf).sort(dim=-1)
    n = valid.sum(dim=-1)
    in_range = torch.arange(values.shape[-1], device=values.device) < n[:, None]
    mean = torch.where(in_range, sorted_values, 0.0).sum(dim=-1) / n.clamp(min=1)
    centred = torch.where(in_range, sorted_values - mean[:, None], 0.0)
    return sorted_values, order, n, mean, centred


# Added to the score of a split that would separate equal values or leave the top
# cluster empty; finite (unlike -inf) so that it can go through a matrix product.
_INFEASIBLE = -1e30


@functools.lru_cache(maxsize=64)
def _split_tables(k: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Constant tables of the split search over K sorted values.

    Candidate c is the pair of split points ``0 <= i_c <= j_c < K``, i.e. clusters
    ``[0, i)``, ``[i, j)``, ``[j, n)`` of the sorted values, enumerated in i-major
    order (so the first maximum prefers the smaller first split).

    Returns:
        i ``(P,)``; j ``(P,)``; members ``(K, 3P)``, 1 where sorted position m belongs
        to the low / mid / high cluster of candidate c (column blocks of P); 1 / size
        ``(3P,)`` of each cluster when all K are valid (floored at 1); and penalty
        ``(K-1, P)``, ``_INFEASIBLE`` times how often candidate c splits at p = 1..K-1.
    """
    i, j = torch.triu_indices(k, k, device=device)
    position = torch.arange(k, device=device)[:, None]
    low, high = position < i, position >= j
    members = torch.cat([low, ~low & ~high, high], dim=1).to(dtype)
    inv_size = 1.0 / members.sum(dim=0).clamp(min=1)
    split_at = position[1:]
    penalty = ((split_at == i).to(dtype) + (split_at == j).to(dtype)) * _INFEASIBLE
    return i, j, members, inv_size, penalty


@dataclass
class _ExactSplit:
    work: Tensor  # (B, K) the values in the working dtype
    sorted_values: Tensor  # (B, K) ascending, +inf where masked
    order: Tensor  # (B, K) sorting permutation
    shifted: Tensor  # (B, K) sorted values minus the row minimum, 0 where masked
    sums: Tensor  # (B, 3P) sum of each candidate's low / mid / high cluster
    best_score: Tensor  # (B,) max over candidates of sum_c S_c^2 / n_c
    best: Tensor  # (B,) index of the best candidate
    i: Tensor  # (P,) candidate first splits
    j: Tensor  # (P,) candidate second splits


def _exact_split(values: Tensor, mask: Tensor | None) -> _ExactSplit:
    """Best pair of split points of every row (see :func:`kmeans_1d_exact`).

    Minimising the SSE is maximising ``S_low^2/n_low + S_mid^2/n_mid + S_high^2/n_high``.
    One matrix product gives the three cluster sums of every candidate split for the
    whole batch; the values are shifted by the row minimum first (the SSE is
    shift-invariant) so that the squares stay small. Splits inside a run of equal
    values, or past the last valid value (an empty top cluster has the SSE of the
    split (0, i), which is a candidate), are penalised. This runs on every training
    step, so it is written for few tensor ops: on tensors this small each op costs
    microseconds of dispatch whatever its size.
    """
    batch, k = values.shape
    work = values.to(_work_dtype(values.device))
    i, j, members, inv_size, penalty = _split_tables(k, values.device, work.dtype)
    num = i.shape[0]
    if mask is None:
        sorted_values, order = work.sort(dim=-1)
        shifted = sorted_values - sorted_values[:, :1]
        repeated = sorted_values[:, 1:] <= sorted_values[:, :-1]
    else:
        sorted_values, order = work.masked_fill(~mask, torch.inf).sort(dim=-1)
        # Masked entries (+inf) and rows without valid values (inf - inf) add nothing.
        shifted = (sorted_values - sorted_values[:, :1]).nan_to_num_(nan=0.0, posinf=0.0)
        n = mask.sum(dim=-1, keepdim=True)
        # Past n the values are +inf, so `<=` holds there; p = n needs the count test.
        repeated = (sorted_values[:, 1:] <= sorted_values[:, :-1]) | (
            torch.arange(1, k, device=values.device) >= n
        )

    sums = shifted @ members  # (B, 3P)
    squares = sums.square()
    if mask is None:
        score = squares.mul_(inv_size).view(batch, 3, num).sum(dim=1)
    else:  # the top cluster's size n - j varies by row
        score = squares[:, : 2 * num].mul_(inv_size[: 2 * num]).view(batch, 2, num).sum(dim=1)
        score += squares[:, 2 * num :] / (n - j).clamp_(min=1)
    score += repeated.to(work.dtype) @ penalty
    # A row without valid values ties everywhere and gets candidate 0: it selects nothing.
    best_score, best = score.max(dim=-1)  # the first maximum on exact ties
    return _ExactSplit(work, sorted_values, order, shifted, sums, best_score, best, i, j)


def _exact_top(values: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, K)`` members of the highest cluster of the exact optimum."""
    split = _exact_split(values, mask)
    threshold = split.sorted_values.gather(1, split.j[split.best][:, None])
    # Splits sit between distinct values, so the top cluster [j, n) is {L >= L_(j)}.
    top = split.work >= threshold
    return top if mask is None else top & mask


def kmeans_1d_exact(values: Tensor, valid: Tensor) -> Clustering1D:
    """Globally optimal 1-D k-means (k = 3) of every row, batched.

    Scores each pair of split points ``0 <= i <= j < n`` of the sorted valid values
    (clusters ``[0, i)``, ``[i, j)``, ``[j, n)``), allowing splits only between distinct
    values, and keeps the best. See the module docstring for ties and empty clusters.

    Args:
        values: ``(B, K)`` finite values (log-likelihoods) at the valid positions.
        valid: ``(B, K)`` bool mask.

    Returns:
        The clustering with the minimum within-cluster sum of squares of each row.
    """
    batch, k = values.shape
    if k == 0:
        empty = values.new_zeros(batch, 3)
        return Clustering1D(
            valid.long() - 1, empty.fill_(torch.nan), values.new_zeros(batch), valid
        )
    split = _exact_split(values, valid)
    i_star, j_star = split.i[split.best], split.j[split.best]
    n = valid.sum(dim=-1)

    positions = torch.arange(k, device=values.device).expand(batch, k)
    sorted_labels = (positions >= i_star[:, None]).long() + (positions >= j_star[:, None]).long()
    labels = torch.empty_like(sorted_labels).scatter_(1, split.order, sorted_labels)

    num = split.i.shape[0]
    sums = split.sums.view(batch, 3, num).gather(
        2, split.best.view(batch, 1, 1).expand(batch, 3, 1)
    )
    counts = torch.stack([i_star, j_star - i_star, n - j_star], dim=-1).to(sums.dtype)
    minimum = split.sorted_values[:, :1]
    centroids = torch.where(counts > 0, sums[:, :, 0] / counts.clamp(min=1) + minimum, torch.nan)
    sse = (split.shifted.square().sum(dim=-1) - split.best_score).clamp(min=0)
    return Clustering1D(
        labels=torch.where(valid, labels, -1),
        centroids=centroids.to(values.dtype),
        sse=sse.to(values.dtype),
        top=valid & (labels == 2),
    )


def kmeans_1d_lloyd(values: Tensor, valid: Tensor, *, iters: int = 20) -> Clustering1D:
    """Lloyd's k-means (k = 3) on every row, batched, deterministic.

    Initial centroids are the 1/6, 1/2 and 5/6 quantiles of the row's valid values
    (linear interpolation); then ``iters`` rounds of assign-to-nearest (ties to the
    lower cluster) and recompute-the-means (an empty cluster keeps its centroid).
    A local optimum, kept for fidelity to k-means as usually run; prefer
    :func:`kmeans_1d_exact`.

    Args:
        values: ``(B, K)`` finite values at the valid positions.
        valid: ``(B, K)`` bool mask.
        iters: number of Lloyd iterations.

    Returns:
        The clustering after the last iteration.
    """
    _, _, n, mean, centred_sorted = _sorted_centred(values, valid)
    work = centred_sorted.dtype
    x = torch.where(valid, values.to(work) - mean[:, None], 0.0)
    quantiles = torch.tensor([1 / 6, 1 / 2, 5 / 6], dtype=work, device=values.device)
    position = quantiles * (n - 1).clamp(min=0)[:, None].to(work)  # (B, 3)
    low, high = position.floor().long(), position.ceil().long()
    frac = position - low.to(work)
    centroids = centred_sorted.gather(1, low) * (1 - frac) + centred_sorted.gather(1, high) * frac

    def assign(c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        nearest = (x[:, :, None] - c[:, None, :]).abs().argmin(dim=-1)  # (B, K), ties -> lower
        members = F.one_hot(nearest, 3).to(work) * valid[:, :, None]
        return nearest, members.sum(dim=1), (members * x[:, :, None]).sum(dim=1)

    for _ in range(iters):
        _, counts, sums = assign(centroids)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    nearest, counts, sums = assign(centroids)

    # Relabel clusters by ascending centroid (Lloyd preserves the order of sorted
    # initial centroids in 1-D, but the sort makes the contract independent of that).
    centroids, perm = centroids.sort(dim=-1, stable=True)
    counts, sums = counts.gather(1, perm), sums.gather(1, perm)
    rank_of_cluster = perm.argsort(dim=-1)
    labels = torch.where(valid, rank_of_cluster.gather(1, nearest), -1)
    top_label = labels.max(dim=-1).values
    top = valid & (labels == top_label[:, None])
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)
    member_centroid = means.gather(1, labels.clamp(min=0))
    sse = torch.where(valid, (x - member_centroid).square(), 0.0).sum(dim=-1)
    return Clustering1D(
        labels=labels,
        centroids=(means + mean[:, None]).to(values.dtype),
        sse=sse.to(values.dtype),
        top=top,
    )


def _top_cluster(values: Tensor, mask: Tensor | None, solver: Solver, lloyd_iters: int) -> Tensor:
    if solver == "exact":
        return _exact_top(values, mask)
    if solver == "lloyd":
        valid = mask if mask is not None else torch.ones_like(values, dtype=torch.bool)
        return kmeans_1d_lloyd(values, valid, iters=lloyd_iters).top
    raise ValueError(f"solver must be 'exact' or 'lloyd'; got {solver!r}")


def select_boundary_negatives(
    logps: Tensor,
    chosen: Tensor,
    mask: Tensor | None = None,
    *,
    stage1: bool = True,
    stage2: bool = True,
    solver: Solver = "exact",
    stage1_inclusive: bool = False,
    lloyd_iters: int = 20,
) -> BoundarySelection:
    """Dynamic boundary-negative selection of DynamicPO (paper §3.2), batched.

    Stage I keeps the violations ``{k : L_k > L_w}``; when a row has none, Stage II
    keeps the highest of three 1-D k-means clusters of its negatives' ``L_k``. The
    switches reproduce the ablations of Table 6:

    ========  ========  ==========================================================
    stage1    stage2    selection per row
    ========  ========  ==========================================================
    True      True      violations if any, else the top cluster (DynamicPO)
    True      False     violations if any, else every valid negative
    False     True      always the top cluster
    False     False     every valid negative (the plain objective)
    ========  ========  ==========================================================

    Inputs are read without gradient: selection is a constant for the backward pass.

    Args:
        logps: ``(B, K)`` policy log-likelihoods L_k of the negatives (summed over tokens).
        chosen: ``(B,)`` policy log-likelihood L_w of the positive.
        mask: ``(B, K)`` bool validity of the negatives; None means all valid.
        stage1: apply Stage I (preference-dominance violations).
        stage2: apply Stage II (k-means top cluster).
        solver: ``"exact"`` (global optimum, default) or ``"lloyd"`` (quantile-initialised
            Lloyd iterations).
        stage1_inclusive: count ties ``L_k == L_w`` as violations, as the official code
            does (``>=``); the paper's Eq. (4) uses ``>`` (default).
        lloyd_iters: iterations of the Lloyd solver.

    Returns:
        The selection mask and the rule that produced each row's selection.

    Raises:
        ValueError: on CPU, when a valid log-prob (or L_w) is ±inf or NaN.
    """
    logps, chosen = logps.detach(), chosen.detach()
    require_finite(logps, mask, "negative log-probs")
    require_finite(chosen, None, "chosen log-probs")
    if logps.shape[-1] == 0:
        return BoundarySelection(_valid(logps, mask), torch.zeros_like(chosen, dtype=torch.long))

    if stage2:
        fallback, fallback_code = _top_cluster(logps, mask, solver, lloyd_iters), RULE_CLUSTER
    else:
        fallback, fallback_code = _valid(logps, mask), RULE_ALL
    if mask is None:
        fallback_rule = torch.full_like(chosen, fallback_code, dtype=torch.long)
    else:  # rows without any valid negative select nothing and report RULE_ALL
        fallback_rule = mask.any(dim=-1) * fallback_code
    if not stage1:
        return BoundarySelection(selected=fallback, rule=fallback_rule)

    violations = logps >= chosen[:, None] if stage1_inclusive else logps > chosen[:, None]
    if mask is not None:
        violations &= mask
    violated = violations.any(dim=-1)
    selected = torch.where(violated[:, None], violations, fallback)
    rule = fallback_rule.masked_fill(violated, RULE_VIOLATION)
    return BoundarySelection(selected=selected, rule=rule)


def _valid(logps: Tensor, mask: Tensor | None) -> Tensor:
    return mask if mask is not None else torch.ones_like(logps, dtype=torch.bool)


def select_top_k(logps: Tensor, mask: Tensor | None = None, *, k: int = 3) -> Tensor:
    """The Top-K baseline of Table 7: the k valid negatives with the highest L_k.

    Ties at the k-th value go to the lower index (stable sort), so exactly
    ``min(k, valid count)`` negatives are selected per row.

    Args:
        logps: ``(B, K)`` policy log-likelihoods of the negatives.
        mask: ``(B, K)`` bool validity; None means all valid.
        k: how many negatives to keep (the paper tries 2, 3 and 4).

    Returns:
        ``(B, K)`` bool selection mask.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    logps = logps.detach()
    valid = _valid(logps, mask)
    require_finite(logps, mask, "negative log-probs")
    key = logps.masked_fill(~valid, -torch.inf)
    order = key.sort(dim=-1, descending=True, stable=True).indices
    rank = order.argsort(dim=-1)
    return valid & (rank < k)
