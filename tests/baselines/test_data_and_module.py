"""Sequence batches, the LightningModule's loss and metrics, and encoder export."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from recpo.baselines.data import SequenceTensors, history_prefixes
from recpo.baselines.export import load_encoder, save_encoder
from recpo.baselines.models import GRU4Rec, SASRec
from recpo.baselines.module import BaselineModule, candidate_scores
from recpo.data import Example
from recpo.errors import DataError


def test_history_prefixes():
    """History (7, 8, 9) gives 7 -> 8 and 7, 8 -> 9; the row's own target is never used."""
    out = history_prefixes([Example((7, 8, 9), target=99, row=4)])
    assert [(e.history, e.target) for e in out] == [((7,), 8), ((7, 8), 9)]
    assert all(e.row == 4 for e in out)
    assert [(e.history, e.target) for e in history_prefixes([Example((7, 8, 9), 99)], 2)] == [
        ((7, 8), 9)
    ]


def test_sequence_tensors_batches():
    """Ids map through ``index_of``; long histories keep their last items; batches trim padding."""
    index_of = {10: 0, 11: 1, 12: 2, 13: 3}
    examples = [
        Example((10, 11, 12, 13), 10, (12, 10, 11), 0),  # cut to the last 3: (11, 12, 13)
        Example((13,), 12, (12, 11, 10), 1),
    ]
    ds = SequenceTensors(examples, index_of, max_len=3, padding_index=4, with_candidates=True)
    batch = ds[[0, 1]]
    assert batch.history.tolist() == [[1, 2, 3], [3, 4, 4]]
    assert batch.lengths.tolist() == [3, 1]
    assert batch.target.tolist() == [0, 2]
    assert batch.candidates.tolist() == [[2, 0, 1], [2, 1, 0]]
    assert batch.target_index.tolist() == [1, 0]
    assert ds[[1]].history.tolist() == [[3]]  # only the columns this batch needs


def test_sequence_tensors_rejects_empty_history():
    with pytest.raises(DataError, match="empty history"):
        SequenceTensors([Example((), 1, None, 3)], {1: 0}, 3, 1, with_candidates=False)


def toy_module(loss: str = "ce", lr: float = 1e-2) -> BaselineModule:
    torch.manual_seed(0)
    model = GRU4Rec(num_items=12, max_len=4, dim=16, dropout=0.0)
    return BaselineModule(model, partial(torch.optim.Adam, lr=lr), loss=loss, num_negatives=3)


def toy_batch() -> SequenceTensors:
    """A deterministic world: the next item is always (last item + 1) mod 12."""
    examples = []
    for start in range(12):
        for length in (1, 2, 3):
            history = tuple((start + j) % 12 for j in range(length))
            target = (history[-1] + 1) % 12
            candidates = tuple(sorted({target, (target + 5) % 12, (target + 7) % 12}))
            examples.append(Example(history, target, candidates))
    return SequenceTensors(examples, {i: i for i in range(12)}, 4, 12, with_candidates=True)


def test_initial_ce_loss_is_near_log_num_items():
    """A fresh model scores items almost equally: the softmax loss is close to log 12."""
    module = toy_module()
    data = toy_batch()
    with torch.no_grad():
        losses = module.training_losses(data[list(range(len(data)))])
    assert losses.shape == (36,)
    assert abs(losses.mean().item() - math.log(12)) < 0.3


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_training_learns_a_deterministic_rule(loss: str):
    """A few hundred full-batch steps on the +1 rule rank the target first on every row."""
    module = toy_module(loss)
    data = toy_batch()
    batch = data[list(range(len(data)))]
    optimizer = module.configure_optimizers()
    first = module.training_losses(batch).mean().item()
    for _ in range(300):
        optimizer.zero_grad()
        module.training_losses(batch).mean().backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        assert module.training_losses(batch).mean().item() < first / 4
        scores = candidate_scores(module.model, batch)
    assert (scores.argmax(dim=1) == batch.target_index).all()


def test_rejects_unknown_loss():
    with pytest.raises(ValueError, match="ce"):
        BaselineModule(GRU4Rec(5), partial(torch.optim.Adam), loss="bpr")


@pytest.mark.parametrize("tie", [True, False])
def test_encoder_round_trip(tmp_path, tie: bool):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = SASRec(num_items=9, max_len=5, dim=8, num_blocks=1, tie_weights=tie).eval()
    item_ids = [100 + i for i in range(9)]
    save_encoder(model, item_ids, tmp_path / "enc", {"dataset": "toy"})
    tables = load_file(tmp_path / "enc" / "item_embeddings.safetensors")
    assert tables["item_embeddings"].shape == (9, 8)
    assert tables["item_ids"].tolist() == item_ids
    assert ("output_embeddings" in tables) is (not tie)
    loaded, ids = load_encoder(tmp_path / "enc")
    assert ids == item_ids
    history, lengths = torch.tensor([[1, 2, 3], [4, 9, 9]]), torch.tensor([3, 1])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.score_all(loaded(history, lengths)), model.score_all(model(history, lengths))
        )


class StubSource:
    """The parts of RecDataModule that SequenceDataModule uses."""

    def __init__(self, splits: dict[str, list[Example]], items: list[int]):
        from recpo.data import ItemCatalog

        self.splits = splits
        self.catalog = ItemCatalog({i: f"item {i}" for i in items}, padding_id=len(items))
        self.source = {"name": "stub"}

    def load(self) -> None:
        pass

    def examples(self, split: str) -> list[Example]:
        return self.splits[split]


def test_prefix_training_rows_never_contain_eval_targets():
    """Val row (1, 2, 3) -> 4 adds 1 -> 2 and 1, 2 -> 3 to training, never ... -> 4."""
    from recpo.baselines.data import SequenceDataModule

    items = [10, 1, 2, 3, 4, 5, 6, 7]  # catalog order decides the indices
    splits = {
        "train": [Example((5, 6), 7)],
        "val": [Example((1, 2, 3), 4, (4, 5, 6))],
        "test": [Example((6, 7), 10, (10, 1, 2))],
    }
    dm = SequenceDataModule(StubSource(splits, items), max_history=3, prefix_splits=["val"])
    dm.setup()
    assert dm.item_ids == items and dm.num_candidates == 3
    assert (dm.num_train_rows, dm.num_prefix_rows) == (1, 2)
    train = dm.datasets["train"][[0, 1, 2]]
    index = {item: i for i, item in enumerate(items)}
    assert train.target.tolist() == [index[7], index[2], index[3]]
    assert index[4] not in train.target.tolist() and index[10] not in train.target.tolist()
    batches = list(dm.train_dataloader())
    assert sum(len(b.target) for b in batches) == 3
    val = next(iter(dm.val_dataloader()))
    assert val.target_index.tolist() == [0]
