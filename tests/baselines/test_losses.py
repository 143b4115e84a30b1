"""The baselines' training objectives, checked against hand-computed values."""

from __future__ import annotations

import math

import torch

from recpo.baselines.losses import full_softmax_loss, sample_negatives, sampled_bce_loss


def test_full_softmax_uniform_scores_give_log_n():
    """Equal scores over N items: the target's probability is 1/N, loss log N."""
    losses = full_softmax_loss(torch.zeros(3, 8), torch.tensor([0, 4, 7]))
    torch.testing.assert_close(losses, torch.full((3,), math.log(8)))


def test_full_softmax_hand_value():
    """Scores (2, 0, 0), target 0: loss = log(e^2 + 2) - 2 = 0.2395..."""
    losses = full_softmax_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    torch.testing.assert_close(losses, torch.tensor([math.log(math.exp(2) + 2) - 2]))


def test_full_softmax_is_per_example():
    """Row i's loss depends on row i only (no averaging across the batch)."""
    scores, target = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    both = full_softmax_loss(scores, target)
    torch.testing.assert_close(both[1:2], full_softmax_loss(scores[1:2], target[1:2]))


def test_sampled_bce_zero_scores_give_log_2_per_term():
    """All scores 0: each term is log 2; K = 3 negatives give 4 log 2."""
    losses = sampled_bce_loss(torch.zeros(2), torch.zeros(2, 3))
    torch.testing.assert_close(losses, torch.full((2,), 4 * math.log(2)))


def test_sampled_bce_hand_value_and_mask():
    """s+ = 1, s- = (-1, 5) with the second masked: loss = log(1 + e^-1) + log(1 + e^-1)."""
    losses = sampled_bce_loss(
        torch.tensor([1.0]), torch.tensor([[-1.0, 5.0]]), torch.tensor([[True, False]])
    )
    torch.testing.assert_close(losses, torch.tensor([2 * math.log1p(math.exp(-1))]))


def test_sampled_bce_stable_for_large_scores():
    losses = sampled_bce_loss(torch.tensor([1000.0, -1000.0]), torch.tensor([[-1000.0], [1000.0]]))
    assert torch.isfinite(losses).all()
    torch.testing.assert_close(losses, torch.tensor([0.0, 2000.0]))


def test_loss_decreases_when_target_score_rises():
    scores = torch.zeros(1, 5)
    higher = scores.clone()
    higher[0, 2] = 1.0
    assert full_softmax_loss(higher, torch.tensor([2])) < full_softmax_loss(
        scores, torch.tensor([2])
    )


def test_sample_negatives_never_the_target_and_covers_the_rest():
    target = torch.tensor([0, 3, 4] * 200)
    negatives = sample_negatives(
        target, num_items=5, num_negatives=4, generator=torch.Generator().manual_seed(0)
    )
    assert negatives.shape == (600, 4)
    assert not (negatives == target[:, None]).any()
    assert negatives.min() >= 0 and negatives.max() <= 4
    # Every non-target item is drawn for each target (uniform over the other 4).
    for t in (0, 3, 4):
        drawn = set(negatives[target == t].flatten().tolist())
        assert drawn == set(range(5)) - {t}
