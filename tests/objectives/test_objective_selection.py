"""Boundary-negative selection: the exact 1-D k-means against brute force and sklearn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recpo.objectives import (
    RULE_ALL,
    RULE_CLUSTER,
    RULE_VIOLATION,
    kmeans_1d_exact,
    kmeans_1d_lloyd,
    select_boundary_negatives,
    select_top_k,
)

TOL = 1e-9


# --------------------------------------------------------------------------- brute force


def _sse_of_partitions(x: np.ndarray, members: np.ndarray) -> np.ndarray:
    """SSE of every partition, computed from explicit centroids (no prefix sums).

    Args:
        x: ``(R, n)`` values.
        members: ``(C, 3, n)`` bool, cluster membership of each of C partitions.

    Returns:
        ``(R, C)`` within-cluster sums of squared deviations.
    """
    counts = members.sum(-1)  # (C, 3)
    sums = np.einsum("rn,cgn->rcg", x, members.astype(float))
    centroids = sums / np.maximum(counts, 1)
    deviation = x[:, None, None, :] - centroids[..., None]  # (R, C, 3, n)
    return (np.where(members[None], deviation, 0.0) ** 2).sum(axis=(-1, -2))


def _contiguous_partitions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every split 0 <= i <= j <= n of n sorted values (empty clusters and split ties allowed)."""
    pairs = np.array([(i, j) for i in range(n + 1) for j in range(i, n + 1)])
    position = np.arange(n)
    low = position[None] < pairs[:, :1]
    high = position[None] >= pairs[:, 1:]
    return np.stack([low, ~low & ~high, high], axis=1), pairs


def brute_force(rows: list[np.ndarray]) -> list[tuple[float, set[int]]]:
    """Minimum SSE over all contiguous 3-partitions of each row's sorted values, and the
    sizes of the top cluster (highest non-empty one) of every partition attaining it."""
    results: list[tuple[float, set[int]] | None] = [None] * len(rows)
    by_size: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        by_size.setdefault(len(row), []).append(r)
    for n, indices in by_size.items():
        if n == 0:
            for r in indices:
                results[r] = (0.0, {0})
            continue
        members, pairs = _contiguous_partitions(n)
        x = np.sort(np.stack([rows[r] for r in indices]), axis=1)
        x = x - x.mean(axis=1, keepdims=True)
        sse = _sse_of_partitions(x, members)
        start = np.where(pairs[:, 1] < n, pairs[:, 1], np.where(pairs[:, 0] < n, pairs[:, 0], 0))
        for row_sse, r in zip(sse, indices):
            best = row_sse.min()
            optimal = row_sse <= best + TOL * (1 + abs(best))
            results[r] = (float(best), {int(n - s) for s in start[optimal]})
    return results  # type: ignore[return-value]


def check_exact_against_brute_force(values: torch.Tensor, valid: torch.Tensor) -> None:
    """The exact solver's SSE is the brute-force minimum and its selection an optimal top cluster."""
    result = kmeans_1d_exact(values, valid)
    x = values.numpy()
    rows = [x[r][valid[r].numpy()] for r in range(x.shape[0])]
    for r, (best, top_sizes) in enumerate(brute_force(rows)):
        assert result.sse[r].item() == pytest.approx(best, rel=1e-7, abs=1e-7)
        top = result.top[r].numpy()
        assert not (top & ~valid[r].numpy()).any()
        if len(rows[r]) == 0:
            assert not top.any()
            continue
        # The selection is a suffix of the sorted values that never splits equal values...
        chosen = x[r][top]
        assert chosen.min() > rows[r][~top[valid[r].numpy()]].max(initial=-math.inf)
        # ...and is the top cluster of an optimal partition.
        assert int(top.sum()) in top_sizes
        # The labels never separate equal values, grow with the values, and reproduce
        # the reported SSE.
        labels = result.labels[r].numpy()[valid[r].numpy()]
        order = np.argsort(rows[r], kind="stable")
        assert (np.diff(labels[order]) >= 0).all()
        for value in np.unique(rows[r]):
            assert len(set(labels[rows[r] == value])) == 1
        sse = sum(
            ((rows[r][labels == c] - rows[r][labels == c].mean()) ** 2).sum() for c in set(labels)
        )
        assert sse == pytest.approx(result.sse[r].item(), rel=1e-7, abs=1e-7)


# --------------------------------------------------------------------------- exact solver


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, K) batch with K in 1..19: continuous values, small integers (ties, runs of
    equal values, all-equal rows) or a mix, and masks from none to half the negatives.

    Hypothesis draws the shape and the kind of data; numpy fills it from a drawn seed,
    which is far cheaper than drawing every element."""
    k = draw(st.integers(1, 19))
    b = draw(st.integers(1, 32))
    kind = draw(st.sampled_from(["continuous", "ties", "mixed", "constant"]))
    mask_rate = draw(st.sampled_from([0.0, 0.2, 0.5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    continuous = rng.normal(-20.0, draw(st.sampled_from([0.01, 1.0, 10.0])), size=(b, k))
    ties = rng.integers(-3, 4, size=(b, k)).astype(float)
    values = {
        "continuous": continuous,
        "ties": ties,
        "mixed": np.where(rng.random((b, k)) < 0.5, ties, continuous),
        "constant": np.full((b, k), -7.5),
    }[kind]
    valid = rng.random((b, k)) >= mask_rate
    return torch.from_numpy(values), torch.from_numpy(valid)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_exact_matches_brute_force_property(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    check_exact_against_brute_force(*batch)


@pytest.mark.parametrize("tied", [False, True])
def test_exact_matches_brute_force_on_thousands_of_rows(tied: bool) -> None:
    """3,800 random rows, K = 1..19, random masks (ties everywhere when ``tied``)."""
    rng = np.random.default_rng(7 + tied)
    for k in range(1, 20):
        rows = 100
        if tied:
            values = rng.integers(-3, 4, size=(rows, k)).astype(float)
        else:
            values = rng.normal(-20.0, 4.0, size=(rows, k))
        valid = rng.random((rows, k)) > 0.2
        check_exact_against_brute_force(torch.from_numpy(values), torch.from_numpy(valid))


def test_exhaustive_labelings_confirm_contiguity() -> None:
    """For n <= 7, all 3^n labelings (not only contiguous ones) never beat the exact SSE."""
    rng = np.random.default_rng(3)
    for n in range(1, 8):
        labelings = np.array(list(itertools.product(range(3), repeat=n)))  # (3^n, n)
        members = labelings[:, None, :] == np.arange(3)[None, :, None]
        x = rng.normal(0.0, 5.0, size=(40, n))
        x[:10] = np.round(x[:10] / 4)  # some ties
        best = _sse_of_partitions(x - x.mean(1, keepdims=True), members).min(axis=1)
        exact = kmeans_1d_exact(torch.from_numpy(x), torch.ones(40, n, dtype=torch.bool)).sse
        np.testing.assert_allclose(exact.numpy(), best, rtol=1e-7, atol=1e-7)


def test_exact_is_never_worse_than_sklearn_kmeans() -> None:
    """sklearn ``KMeans(3, random_state=42)`` per row, as the official code runs it."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.normal(-20.0, 4.0, size=(100, 15))
    exact = kmeans_1d_exact(torch.from_numpy(x), torch.ones(100, 15, dtype=torch.bool))
    worse = 0
    with threadpool_limits(limits=1):  # 15-point fits: threads only add overhead
        fits = [KMeans(n_clusters=3, random_state=42).fit(row.reshape(-1, 1)) for row in x]
    for r, fit in enumerate(fits):
        assert exact.sse[r].item() <= fit.inertia_ * (1 + 1e-9) + 1e-9
        if fit.inertia_ > exact.sse[r].item() * (1 + 1e-6) + 1e-6:
            worse += 1
            continue
        # Where sklearn finds the optimum, both pick the same top cluster.
        means = [x[r][fit.labels_ == c].mean() for c in range(3)]
        sklearn_top = fit.labels_ == int(np.argmax(means))
        assert (exact.top[r].numpy() == sklearn_top).all()
    assert worse > 0  # a single k-means++ start does miss the optimum on some rows


def test_exact_hand_examples() -> None:
    """Hand-worked clusterings.

    [−20, −19, −10, −9, −1]: {−20, −19}, {−10, −9}, {−1}, SSE 0.5 + 0.5 + 0 = 1, top {−1}.
    [0, 0, 1, 1, 5, 5]: three runs of ties, SSE 0, top {5, 5} (ties stay together).
    [7, 7, 7]: one distinct value, SSE 0, everything is the top cluster.
    [2, 1]: two values, each its own cluster, top {2}.
    """
    values = torch.tensor(
        [
            [-20.0, -19.0, -10.0, -9.0, -1.0, 0.0],
            [5.0, 0.0, 1.0, 5.0, 0.0, 1.0],
            [7.0, 7.0, 7.0, 0.0, 0.0, 0.0],
            [2.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    valid = torch.tensor(
        [[1, 1, 1, 1, 1, 0], [1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    ).bool()
    result = kmeans_1d_exact(values, valid)
    torch.testing.assert_close(result.sse, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    expected_top = torch.tensor(
        [[0, 0, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    ).bool()
    assert torch.equal(result.top, expected_top)
    assert torch.equal(result.labels[0], torch.tensor([0, 0, 1, 1, 2, -1]))
    torch.testing.assert_close(result.centroids[0], torch.tensor([-19.5, -9.5, -1.0]))


# --------------------------------------------------------------------------- Lloyd


def test_lloyd_is_deterministic_and_never_beats_exact() -> None:
    rng = np.random.default_rng(1)
    values = torch.from_numpy(rng.normal(-20.0, 4.0, size=(300, 15)))
    valid = torch.from_numpy(rng.random((300, 15)) > 0.1)
    first, second = kmeans_1d_lloyd(values, valid), kmeans_1d_lloyd(values, valid)
    assert torch.equal(first.labels, second.labels)
    exact = kmeans_1d_exact(values, valid)
    assert (first.sse >= exact.sse - 1e-9).all()
    assert (first.top & ~valid).sum() == 0 and (first.top.any(-1) == valid.any(-1)).all()


def test_lloyd_finds_separated_clusters_and_handles_small_rows() -> None:
    values = torch.tensor(
        [
            [-30.0, -29.0, -15.0, -14.5, -2.0, -1.0],
            [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
            [1.0, 2.0, 0.0, 0.0, 0.0, 0.0],
            [4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    valid = torch.tensor([[1] * 6, [1] * 6, [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]).bool()
    lloyd, exact = kmeans_1d_lloyd(values, valid), kmeans_1d_exact(values, valid)
    assert torch.equal(lloyd.top, exact.top)
    torch.testing.assert_close(lloyd.sse, exact.sse)


# --------------------------------------------------------------------------- selector


def test_stage_one_selects_violations() -> None:
    """L_w = −5: negatives −4 and −3 beat it (Stage I); −5 ties and only counts with ``>=``."""
    logps = torch.tensor([[-4.0, -9.0, -5.0, -3.0]])
    chosen = torch.tensor([-5.0])
    selection = select_boundary_negatives(logps, chosen)
    assert selection.selected.tolist() == [[True, False, False, True]]
    assert selection.rule.tolist() == [RULE_VIOLATION]
    inclusive = select_boundary_negatives(logps, chosen, stage1_inclusive=True)
    assert inclusive.selected.tolist() == [[True, False, True, True]]


def test_ablation_switches() -> None:
    """Row 0 has a violation (−1 > −2); row 1 has none: clusters {−30}, {−20, −19}, {−3, −2.5}."""
    logps = torch.tensor([[-1.0, -10.0, -11.0, -30.0, -31.0], [-30.0, -20.0, -19.0, -3.0, -2.5]])
    chosen = torch.tensor([-2.0, 0.0])
    expected = {
        (True, True): ([[1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], [RULE_VIOLATION, RULE_CLUSTER]),
        (True, False): ([[1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], [RULE_VIOLATION, RULE_ALL]),
        (False, True): ([[1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], [RULE_CLUSTER, RULE_CLUSTER]),
        (False, False): ([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], [RULE_ALL, RULE_ALL]),
    }
    for (stage1, stage2), (selected, rule) in expected.items():
        for solver in ("exact", "lloyd"):
            result = select_boundary_negatives(
                logps, chosen, stage1=stage1, stage2=stage2, solver=solver
            )
            assert result.selected.int().tolist() == selected, (stage1, stage2, solver)
            assert result.rule.tolist() == rule, (stage1, stage2, solver)


def test_small_k_ties_and_masks() -> None:
    """K < 3 and masks: one valid negative is selected; of two, the larger (both if equal)."""
    logps = torch.tensor(
        [
            [-3.0, -9.0, -1.0],
            [-3.0, -8.0, 0.0],
            [-4.0, -4.0, 0.0],
            [-6.0, -6.0, -6.0],
            [1.0, 2.0, 3.0],
        ]
    )
    mask = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]]).bool()
    chosen = torch.zeros(5)  # no valid negative beats it
    result = select_boundary_negatives(logps, chosen, mask)
    assert result.selected.int().tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]]
    assert result.rule.tolist() == [RULE_CLUSTER] * 4 + [RULE_ALL]
    assert torch.equal(
        select_boundary_negatives(logps[:4, :1], chosen[:4]).selected, torch.ones(4, 1).bool()
    )
    empty = select_boundary_negatives(torch.zeros(2, 0), torch.zeros(2))
    assert empty.selected.shape == (2, 0) and empty.rule.tolist() == [RULE_ALL, RULE_ALL]


def test_all_ones_mask_equals_no_mask_and_permutation_equivariance() -> None:
    g = torch.Generator().manual_seed(5)
    logps = torch.randn(64, 15, generator=g) * 4 - 20
    chosen = torch.randn(64, generator=g) * 4 - 18
    plain = select_boundary_negatives(logps, chosen)
    masked = select_boundary_negatives(logps, chosen, torch.ones(64, 15, dtype=torch.bool))
    assert torch.equal(plain.selected, masked.selected) and torch.equal(plain.rule, masked.rule)
    perm = torch.randperm(15, generator=g)
    permuted = select_boundary_negatives(logps[:, perm], chosen)
    assert torch.equal(permuted.selected, plain.selected[:, perm])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_logps_raise_unless_masked(bad: float) -> None:
    logps = torch.tensor([[-1.0, -2.0, bad]])
    with pytest.raises(ValueError, match="non-finite"):
        select_boundary_negatives(logps, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        select_boundary_negatives(logps[:, :2], torch.tensor([bad]))
    selection = select_boundary_negatives(
        logps, torch.tensor([0.0]), torch.tensor([[True, True, False]])
    )
    assert selection.selected.tolist() == [[True, False, False]]
    with pytest.raises(ValueError, match="solver"):
        select_boundary_negatives(logps[:, :2], torch.tensor([0.0]), solver="kmeans++")


def test_selection_carries_no_gradient() -> None:
    logps = torch.randn(3, 5, requires_grad=True)
    chosen = torch.randn(3, requires_grad=True)
    selection = select_boundary_negatives(logps, chosen)
    assert not selection.selected.requires_grad and selection.selected.dtype == torch.bool


def test_top_k() -> None:
    """Top-k by log-likelihood; ties at the cut go to the lower index; masks respected."""
    logps = torch.tensor([[1.0, 5.0, 3.0, 5.0], [9.0, 1.0, 2.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]).bool()
    assert select_top_k(logps, mask, k=1).int().tolist() == [[0, 1, 0, 0], [0, 0, 0, 1]]
    assert select_top_k(logps, mask, k=3).int().tolist() == [[0, 1, 1, 1], [0, 1, 1, 1]]
    assert select_top_k(logps, mask, k=9).int().tolist() == mask.int().tolist()
    with pytest.raises(ValueError):
        select_top_k(logps, k=0)


@settings(max_examples=100, deadline=None)
@given(batches(), st.floats(-25.0, -15.0), st.booleans())
def test_selector_matches_a_per_row_reference(
    batch: tuple[torch.Tensor, torch.Tensor], positive: float, inclusive: bool
) -> None:
    """Per row: the violations if any (``>`` or ``>=``), else an optimal top cluster."""
    values, valid = batch
    chosen = torch.full((values.shape[0],), positive, dtype=values.dtype)
    result = select_boundary_negatives(values, chosen, valid, stage1_inclusive=inclusive)
    x, v = values.numpy(), valid.numpy()
    optimal = brute_force([x[r][v[r]] for r in range(x.shape[0])])
    for r in range(x.shape[0]):
        violations = v[r] & ((x[r] >= positive) if inclusive else (x[r] > positive))
        selected = result.selected[r].numpy()
        if violations.any():
            assert (selected == violations).all() and result.rule[r] == RULE_VIOLATION
        elif v[r].any():
            assert int(selected.sum()) in optimal[r][1] and result.rule[r] == RULE_CLUSTER
            assert not (selected & ~v[r]).any()
        else:
            assert not selected.any() and result.rule[r] == RULE_ALL
