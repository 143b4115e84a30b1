"""Candidate lists (S-DPO procedure) and the seeded negative sampler."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recpo.data.candidates import attach_candidates, negative_choices, sample_candidates
from recpo.data.records import Example, ItemCatalog


def reference_candidates(history, target, items, n=20):
    """The published procedure written plainly, with the full pool materialised."""
    random.seed(target)
    pool = [i for i in items if i not in history and i != target]
    ids = random.sample(pool, n - 1) + [target]
    random.seed(target)
    random.shuffle(ids)
    return tuple(ids)


@pytest.mark.parametrize("seed", range(20))
def test_lazy_pool_equals_materialised_pool(seed):
    rng = random.Random(seed)
    items = rng.sample(range(1000), 300)  # arbitrary catalog order
    history = rng.sample(items, rng.randint(0, 10))
    target = rng.choice([i for i in items if i not in history])
    position = {item: i for i, item in enumerate(items)}
    assert sample_candidates(history, target, items, position) == reference_candidates(
        history, target, items
    )


def test_candidates_contain_target_and_exclude_history():
    catalog = ItemCatalog({i: f"I{i}" for i in range(50)}, 50)
    exs = attach_candidates(
        [Example((1, 2, 3), 7, None, 0), Example((4, 5, 6), 9, None, 1)], catalog
    )
    for ex in exs:
        assert len(ex.candidates) == 20 and len(set(ex.candidates)) == 20
        assert ex.target in ex.candidates and not set(ex.history) & set(ex.candidates)


def test_global_random_state_is_restored():
    catalog = ItemCatalog({i: f"I{i}" for i in range(50)}, 50)
    random.seed(123)
    expected = random.random()
    random.seed(123)
    attach_candidates([Example((1, 2, 3), 7, None, 0)], catalog)
    assert random.random() == expected


def test_negative_choices_seeded_stable_and_resampled():
    a = negative_choices(100, 15, 19, seed=3)
    assert a.shape == (100, 15)
    assert all(len(set(row)) == 15 for row in a.tolist()) and a.min() >= 0 and a.max() < 19
    assert np.array_equal(a, negative_choices(100, 15, 19, seed=3))  # same seed, same draw
    assert not np.array_equal(a, negative_choices(100, 15, 19, seed=4))
    e0 = negative_choices(100, 15, 19, seed=3, epoch=0)
    e1 = negative_choices(100, 15, 19, seed=3, epoch=1)
    assert not np.array_equal(e0, e1) and np.array_equal(
        e1, negative_choices(100, 15, 19, seed=3, epoch=1)
    )
    # Roughly uniform over the 19 non-target candidates.
    counts = np.bincount(negative_choices(5000, 1, 19, seed=0).ravel(), minlength=19)
    assert counts.min() > 200 and counts.max() < 330


@pytest.mark.parametrize("k", [0, 20])
def test_negative_choices_rejects_bad_k(k):
    with pytest.raises(ValueError, match="num_negatives must be in 1..19"):
        negative_choices(10, k, 19, seed=0)
