"""Count-based reference scorers, on hand-made rows."""

from __future__ import annotations

import pytest

from recpo.baselines.reference import popularity_scores, reference_metrics, transition_scores
from recpo.data import Example

TRAIN = [
    Example((1,), 2),
    Example((5, 1), 2),
    Example((3,), 4),
    Example((1, 3), 4),
    Example((2,), 4),
]


def test_popularity_counts_training_targets():
    """Targets: 2 twice, 4 three times, 1 never."""
    rows = [Example((9,), 2, (1, 2, 4))]
    assert popularity_scores(TRAIN, rows).tolist() == [[0.0, 2.0, 3.0]]


def test_transitions_beat_popularity_and_popularity_breaks_ties():
    """After item 1: 1 -> 2 was seen twice, 1 -> 4 never, so 2 outranks the more popular 4;
    after item 7 (never seen) the order is popularity's."""
    rows = [Example((1,), 2, (4, 2)), Example((7,), 4, (2, 4))]
    scores = transition_scores(TRAIN, rows)
    assert scores[0, 1] > scores[0, 0]
    assert scores[1, 1] > scores[1, 0] and scores[1].max() < 1.0


def test_reference_metrics_keys_and_values():
    rows = [Example((1,), 2, (4, 2)), Example((7,), 4, (2, 4))]
    metrics = reference_metrics(TRAIN, {"test": rows})
    # Popularity ranks 4 first on both rows: a miss, then a hit; transitions hit both.
    assert metrics["popularity:test/hr@1"] == pytest.approx(0.5)
    assert metrics["transition:test/hr@1"] == pytest.approx(1.0)
