"""Boundary-negative selection (DynamicPO §3.2) and the Top-K baseline (Table 7).

Everything here works on the whole ``(B, K)`` tensor at once: no Python loop over
examples, no ``.item()``, no host synchronisation (the finiteness check raises on
CPU and becomes an asynchronous device assertion elsewhere, see
:func:`~recpo.objectives.types.require_finite`).

Stage II clusters the negatives' log-likelihoods into three groups with 1-D k-means.
In one dimension every optimal k-means clustering is made of contiguous runs of the
sorted values, so the exact optimum is found by scoring every pair of split points
``0 <= i <= j <= n`` at once: ``O(K^2)`` candidates per row, a few dozen tensor ops
for the whole batch. Minimising the within-cluster sum of squares (SSE) is the same
as maximising ``sum_c S_c^2 / n_c`` over clusters (``S_c`` the sum of the centred
values of cluster c), which is what gets scored, in float64.

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

#: ``stage`` value of a row whose selection stages did not fire: all valid negatives kept.
STAGE_ALL = 0
#: Stage I fired: the negatives more likely than the positive were selected.
STAGE_VIOLATION = 1
#: Stage II fired: the top k-means cluster was selected.
STAGE_CLUSTER = 2

Solver = Literal["exact", "lloyd"]


@dataclass
class Clustering1D:
    """Result of a batched 1-D k-means with k = 3.

    Attributes:
        labels: ``(B, K)`` long cluster index in ascending centroid order (0 lowest,
            2 highest); -1 for masked entries. A cluster may be empty.
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
        stage: ``(B,)`` long, :data:`STAGE_VIOLATION`, :data:`STAGE_CLUSTER` or
            :data:`STAGE_ALL`, which rule produced the row's selection.
    """

    selected: Tensor
    stage: Tensor


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


@functools.lru_cache(maxsize=64)
def _split_tables(k: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Constants of the split search for K negatives, indexed by split position p = 0..K.

    Returns:
        positions ``(K+1,)``; 1/max(p, 1) ``(K+1,)``; 1/max(j − i, 1) ``(K+1, K+1)``
        indexed ``[i, j]``; and an additive ``[i, j]`` penalty, -inf where i > j.
    """
    positions = torch.arange(k + 1, device=device)
    inv_low = 1.0 / positions.to(dtype).clamp(min=1)
    width = positions[None, :] - positions[:, None]
    inv_mid = 1.0 / width.to(dtype).clamp(min=1)
    order_penalty = torch.where(width >= 0, 0.0, -torch.inf).to(dtype)
    return positions, inv_low, inv_mid, order_penalty


@dataclass
class _ExactSplit:
    sorted_values: Tensor  # (B, K) ascending, +inf where masked (work dtype)
    order: Tensor  # (B, K) sorting permutation
    n: Tensor  # (B,) valid count
    prefix: Tensor  # (B, K+1) prefix sums of the sorted values minus the row minimum
    best_score: Tensor  # (B,) max over splits of sum_c S_c^2 / n_c
    i: Tensor  # (B,) first split
    j: Tensor  # (B,) second split


def _exact_split(values: Tensor, valid: Tensor) -> _ExactSplit:
    """Best pair of split points of every row (see :func:`kmeans_1d_exact`).

    Minimising the SSE is maximising ``S_low^2/n_low + S_mid^2/n_mid + S_high^2/n_high``
    over splits 0 <= i <= j <= n. All ``(i, j)`` are scored at once as a
    ``(B, K+1, K+1)`` tensor; the values are shifted by the row minimum first so that
    the squares stay small (SSE is shift-invariant).
    """
    batch, k = values.shape
    work = values.to(_work_dtype(values.device))
    sorted_values, order = torch.where(valid, work, torch.inf).sort(dim=-1)
    n = valid.sum(dim=-1)
    shifted = (sorted_values - sorted_values[:, :1]).nan_to_num(nan=0.0, posinf=0.0)
    # (B, K+1): sum of the first p values. (torch.cat: F.pad costs ~20 µs on CPU.)
    edge = shifted.new_zeros(batch, 1)
    prefix = torch.cat([edge, shifted.cumsum(dim=-1)], dim=-1)
    positions, inv_low, inv_mid, order_penalty = _split_tables(k, values.device, prefix.dtype)

    # A split at p (0 < p < n) must fall between two distinct values; p = 0 leaves a
    # cluster empty. p = n (an empty top cluster) is excluded as well: such a
    # clustering has the same SSE as (0, i), which keeps the top cluster non-empty, so
    # the top cluster always starts at j. A row without valid values gets no feasible
    # split at all (max then returns i = j = 0 and nothing is selected).
    distinct = sorted_values[:, 1:] > sorted_values[:, :-1]
    always = torch.ones_like(edge, dtype=torch.bool)
    feasible = torch.cat([always, distinct, always], dim=-1) & (positions < n[:, None])
    penalty = torch.where(feasible, 0.0, -torch.inf)  # (B, K+1)

    total = prefix.gather(1, n[:, None])  # (B, 1)
    low = prefix.square() * inv_low + penalty  # indexed by i
    high = (total - prefix).square() / (n[:, None] - positions).clamp(min=1) + penalty  # by j
    mid = (prefix[:, None, :] - prefix[:, :, None]).square() * inv_mid + order_penalty
    score = (mid + low[:, :, None] + high[:, None, :]).flatten(1)  # (B, (K+1)^2), i-major
    best_score, best = score.max(dim=-1)  # the first maximum on exact ties
    i, j = best.div(k + 1, rounding_mode="floor"), best.remainder(k + 1)
    return _ExactSplit(sorted_values, order, n, prefix, best_score, i, j)


def _exact_top(values: Tensor, valid: Tensor) -> Tensor:
    """``(B, K)`` members of the highest cluster of the exact optimum."""
    split = _exact_split(values, valid)
    threshold = split.sorted_values.gather(1, split.j[:, None])
    # Splits sit between distinct values, so the top cluster [j, n) is {L >= L_(j)}.
    return valid & (values.to(threshold.dtype) >= threshold)


def kmeans_1d_exact(values: Tensor, valid: Tensor) -> Clustering1D:
    """Globally optimal 1-D k-means (k = 3) of every row, batched.

    Scores each pair of split points ``0 <= i <= j <= n`` of the sorted valid values
    (clusters ``[0, i)``, ``[i, j)``, ``[j, n)``), allowing splits only between distinct
    values, and keeps the best. See the module docstring for ties and empty clusters.

    Args:
        values: ``(B, K)`` finite values (log-likelihoods) at the valid positions.
        valid: ``(B, K)`` bool mask.

    Returns:
        The clustering with the minimum within-cluster sum of squares of each row.
    """
    batch, k = values.shape
    split = _exact_split(values, valid)
    i_star, j_star, n = split.i, split.j, split.n

    positions = torch.arange(k, device=values.device).expand(batch, k)
    sorted_labels = (positions >= i_star[:, None]).long() + (positions >= j_star[:, None]).long()
    labels = torch.empty_like(sorted_labels).scatter_(1, split.order, sorted_labels)
    top_label = (n - 1 >= i_star).long() + (n - 1 >= j_star).long()

    below_i = split.prefix.gather(1, i_star[:, None])  # (B, 1)
    below_j = split.prefix.gather(1, j_star[:, None])
    total = split.prefix.gather(1, n[:, None])
    sums = torch.cat([below_i, below_j - below_i, total - below_j], dim=-1)  # (B, 3)
    counts = torch.stack([i_star, j_star - i_star, n - j_star], dim=-1).to(sums.dtype)
    minimum = split.sorted_values[:, :1]
    centroids = torch.where(counts > 0, sums / counts.clamp(min=1) + minimum, torch.nan)
    in_range = positions < n[:, None]
    shifted = torch.where(in_range, split.sorted_values - minimum, 0.0)
    sse = (shifted.square().sum(dim=-1) - split.best_score).clamp(min=0)
    return Clustering1D(
        labels=torch.where(valid, labels, -1),
        centroids=centroids.to(values.dtype),
        sse=sse.to(values.dtype),
        top=valid & (labels == top_label[:, None]),
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


def _top_cluster(values: Tensor, valid: Tensor, solver: Solver, lloyd_iters: int) -> Tensor:
    if solver == "exact":
        return _exact_top(values, valid)
    if solver == "lloyd":
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
        The selection mask and the stage that produced each row's selection.

    Raises:
        ValueError: on CPU, when a valid log-prob (or L_w) is ±inf or NaN.
    """
    logps, chosen = logps.detach(), chosen.detach()
    valid = mask if mask is not None else torch.ones_like(logps, dtype=torch.bool)
    require_finite(logps, valid, "negative log-probs")
    require_finite(chosen, None, "chosen log-probs")

    if stage2:
        fallback = _top_cluster(logps, valid, solver, lloyd_iters)
        fallback_stage = STAGE_CLUSTER
    else:
        fallback = valid
        fallback_stage = STAGE_ALL
    has_valid = valid.any(dim=-1)
    if not stage1:
        stage = torch.where(has_valid, fallback_stage, STAGE_ALL)
        return BoundarySelection(selected=fallback, stage=stage)

    above = logps >= chosen[:, None] if stage1_inclusive else logps > chosen[:, None]
    violations = valid & above
    violated = violations.any(dim=-1)
    selected = torch.where(violated[:, None], violations, fallback)
    stage = torch.where(violated, STAGE_VIOLATION, torch.where(has_valid, fallback_stage, STAGE_ALL))
    return BoundarySelection(selected=selected, stage=stage)


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
    valid = mask if mask is not None else torch.ones_like(logps, dtype=torch.bool)
    require_finite(logps, valid, "negative log-probs")
    key = torch.where(valid, logps, -torch.inf)
    order = key.sort(dim=-1, descending=True, stable=True).indices
    rank = order.argsort(dim=-1)
    return valid & (rank < k)
