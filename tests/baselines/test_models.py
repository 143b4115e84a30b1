"""Shapes, padding masking and scoring of GRU4Rec, Caser and SASRec."""

from __future__ import annotations

import pytest
import torch

from recpo.baselines.models import (
    Caser,
    GRU4Rec,
    SASRec,
    SequentialRecommender,
    last_position,
    padding_mask,
)

NUM_ITEMS, MAX_LEN, DIM = 50, 6, 16


def make(name: str, tie_weights: bool | None = None, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    kwargs = {} if tie_weights is None else {"tie_weights": tie_weights}
    if name == "gru4rec":
        return GRU4Rec(NUM_ITEMS, MAX_LEN, DIM, **kwargs)
    if name == "caser":
        return Caser(NUM_ITEMS, MAX_LEN, DIM, num_horizontal=4, num_vertical=2, **kwargs)
    return SASRec(NUM_ITEMS, MAX_LEN, DIM, num_blocks=2, num_heads=2, **kwargs)


MODELS = ["gru4rec", "caser", "sasrec"]


def random_batch(
    batch: int = 7, width: int = MAX_LEN, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=g)
    lengths[0] = width  # one full row, so no column is all padding
    history = torch.randint(0, NUM_ITEMS, (batch, width), generator=g)
    history[~padding_mask(lengths, width)] = NUM_ITEMS
    return history, lengths


def test_padding_mask_and_last_position():
    """Row lengths (2, 3) in width 3: masks [T T F], [T T T]; last states 1 and 5."""
    lengths = torch.tensor([2, 3])
    assert padding_mask(lengths, 3).tolist() == [[True, True, False], [True, True, True]]
    states = torch.arange(6.0).view(2, 3, 1)
    assert last_position(states, lengths).squeeze(-1).tolist() == [1.0, 5.0]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("tie", [True, False])
def test_shapes(name: str, tie: bool):
    model = make(name, tie).eval()
    history, lengths = random_batch()
    hidden = model(history, lengths)
    assert hidden.shape == (7, DIM)
    assert model.score_all(hidden).shape == (7, NUM_ITEMS)
    items = torch.randint(0, NUM_ITEMS, (7, 20))
    assert model.score_items(hidden, items).shape == (7, 20)
    # A batch narrower than max_len (padding columns trimmed) is accepted too.
    assert model(history[:, :4].clamp(max=NUM_ITEMS), lengths.clamp(max=4)).shape == (7, DIM)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("tie", [True, False])
def test_score_items_matches_score_all(name: str, tie: bool):
    """Scoring a subset of items gives the same numbers as gathering from all items."""
    model = make(name, tie).eval()
    history, lengths = random_batch()
    hidden = model(history, lengths)
    items = torch.randint(0, NUM_ITEMS, (7, 5))
    torch.testing.assert_close(
        model.score_items(hidden, items), model.score_all(hidden).gather(1, items)
    )


@pytest.mark.parametrize("name", MODELS)
def test_padding_ids_do_not_matter(name: str):
    """Any ids in padding positions, and extra padding columns, leave outputs unchanged."""
    model = make(name).eval()
    history, lengths = random_batch()
    pad = ~padding_mask(lengths, MAX_LEN)
    scrambled = history.clone()
    scrambled[pad] = torch.randint(0, NUM_ITEMS, (int(pad.sum()),))
    with torch.no_grad():
        reference = model.score_all(model(history, lengths))
        torch.testing.assert_close(model.score_all(model(scrambled, lengths)), reference)
        # A row on its own, without any padding column, gives the same scores.
        for i in range(len(lengths)):
            alone = history[i : i + 1, : lengths[i]]
            torch.testing.assert_close(
                model.score_all(model(alone, lengths[i : i + 1])), reference[i : i + 1]
            )


@pytest.mark.parametrize("name", MODELS)
def test_history_matters(name: str):
    """Changing a real item changes the representation (the models read the history)."""
    model = make(name).eval()
    history, lengths = random_batch()
    changed = history.clone()
    changed[:, 0] = (changed[:, 0] + 1) % NUM_ITEMS
    with torch.no_grad():
        assert not torch.allclose(model(history, lengths), model(changed, lengths))


def test_caser_right_align():
    """Lengths (1, 3) in a window of 4: row 0 -> [0 0 0 a], row 1 -> [0 a b c]."""
    model = Caser(NUM_ITEMS, max_len=4, dim=1, num_horizontal=1, num_vertical=1)
    emb = torch.tensor([[[5.0], [0.0], [0.0]], [[1.0], [2.0], [3.0]]])
    aligned = model.right_align(emb, torch.tensor([1, 3])).squeeze(-1)
    assert aligned.tolist() == [[0.0, 0.0, 0.0, 5.0], [0.0, 1.0, 2.0, 3.0]]


def test_rejects_bad_inputs():
    model = make("sasrec")
    with pytest.raises(ValueError, match="at most"):
        model(torch.zeros(2, MAX_LEN + 1, dtype=torch.long), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="at least one item"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 2]))
