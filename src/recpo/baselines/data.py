"""The same splits, histories, targets and candidates as the LLM models, as index tensors.

:class:`SequenceDataModule` wraps a :class:`recpo.data.RecDataModule`: it reads its
examples (so the rows, the ``min_history`` filter and the 20 candidates per val/test
row are those the LLM models see), maps item ids to contiguous indices in catalog
order, and serves right-padded batches.

Optionally, training also gets *history prefixes* of other splits: from a row with
history ``h_1..h_n``, the examples ``h_1..h_{k-1} -> h_k``. They use only items a
user had already interacted with before the row's target, never the target itself.
This is how the Steam baselines get training data (its train split is a sample).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from recpo.data import Example, RecDataModule
from recpo.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SequenceBatch:
    """A batch of right-padded histories with their targets (and candidates for val/test).

    Attributes:
        history: ``(B, L)`` item indices, oldest first, padded on the right.
        lengths: ``(B,)`` number of real items per row (at least 1).
        target: ``(B,)`` target item index.
        candidates: ``(B, C)`` candidate item indices in display order (val/test), or None.
        target_index: ``(B,)`` position of the target in ``candidates``, or None.
    """

    history: Tensor
    lengths: Tensor
    target: Tensor
    candidates: Tensor | None = None
    target_index: Tensor | None = None


def history_prefixes(examples: Sequence[Example], min_length: int = 1) -> list[Example]:
    """Next-item examples inside each history: ``h_1..h_{k-1} -> h_k`` for every k.

    Args:
        examples: Rows whose histories to use (their targets are ignored).
        min_length: Shortest prefix kept.

    Returns:
        Examples without candidates, in row order then prefix order.
    """
    out = []
    for ex in examples:
        for k in range(max(min_length, 1), len(ex.history)):
            out.append(Example(ex.history[:k], ex.history[k], None, ex.row))
    return out


class SequenceTensors(Dataset):
    """Examples as tensors; indexing with a list of rows returns a :class:`SequenceBatch`.

    Args:
        examples: The rows.
        index_of: Item id -> contiguous item index.
        max_len: Histories are cut to their last ``max_len`` items.
        padding_index: Value stored in padding positions (models ignore it).
        with_candidates: Keep the candidate lists (every row must have one).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        index_of: dict[int, int],
        max_len: int,
        padding_index: int,
        with_candidates: bool,
    ):
        n = len(examples)
        self.history = torch.full((n, max_len), padding_index, dtype=torch.long)
        self.lengths = torch.zeros(n, dtype=torch.long)
        self.target = torch.zeros(n, dtype=torch.long)
        self.candidates = None
        self.target_index = None
        if with_candidates:
            width = max((len(ex.candidates or ()) for ex in examples), default=0)
            self.candidates = torch.full((n, width), padding_index, dtype=torch.long)
            self.target_index = torch.zeros(n, dtype=torch.long)
        for i, ex in enumerate(examples):
            items = ex.history[-max_len:]
            if not items:
                raise DataError("row has an empty history", row=ex.row)
            self.history[i, : len(items)] = torch.tensor([index_of[h] for h in items])
            self.lengths[i] = len(items)
            self.target[i] = index_of[ex.target]
            if with_candidates:
                if ex.candidates is None or len(ex.candidates) != width:
                    raise DataError(f"every evaluation row needs {width} candidates", row=ex.row)
                self.candidates[i] = torch.tensor([index_of[c] for c in ex.candidates])
                self.target_index[i] = ex.candidates.index(ex.target)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, rows: list[int]) -> SequenceBatch:
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        # Trim padding columns that no row in this batch uses.
        width = int(self.lengths[rows_t].max())
        return SequenceBatch(
            history=self.history[rows_t, :width],
            lengths=self.lengths[rows_t],
            target=self.target[rows_t],
            candidates=None if self.candidates is None else self.candidates[rows_t],
            target_index=None if self.target_index is None else self.target_index[rows_t],
        )


class SequenceDataModule(L.LightningDataModule):
    """Train/val/test batches of item-index sequences over a :class:`RecDataModule`.

    Args:
        source: The data module of the LLM pipeline (``cfg.data``), not yet loaded.
        max_history: ``L``; histories keep their last ``L`` items.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        seed: Seed of the training shuffle.
        prefix_splits: Splits whose history prefixes are added to training
            (see module docstring); e.g. ``["val"]`` for Steam.
        min_prefix_length: Shortest history of a prefix example.
    """

    def __init__(
        self,
        source: RecDataModule,
        max_history: int = 10,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        seed: int = 0,
        prefix_splits: Sequence[str] = (),
        min_prefix_length: int = 1,
    ):
        super().__init__()
        unknown = [s for s in prefix_splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"prefix_splits must be among {SPLITS}, got {unknown}")
        self.source = source
        self.max_history = max_history
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.prefix_splits = list(prefix_splits)
        self.min_prefix_length = min_prefix_length
        self.item_ids: list[int] = []
        self.datasets: dict[str, SequenceTensors] = {}
        self.num_train_rows = 0
        self.num_prefix_rows = 0

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_candidates(self) -> int:
        candidates = self.datasets["test"].candidates
        return 0 if candidates is None else candidates.size(1)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.source.load()
        # Catalog order: index i is item_ids[i]; saved with exported embeddings.
        self.item_ids = list(self.source.catalog.item_ids)
        index_of = {item: i for i, item in enumerate(self.item_ids)}
        train = list(self.source.examples("train"))
        prefixes = [
            ex
            for split in self.prefix_splits
            for ex in history_prefixes(self.source.examples(split), self.min_prefix_length)
        ]
        self.num_train_rows, self.num_prefix_rows = len(train), len(prefixes)
        if not train and not prefixes:
            raise DataError(f"{self.source.source.get('name')}: no training rows")
        log.info(
            "baseline training rows: %d from train, %d history prefixes of %s",
            len(train),
            len(prefixes),
            self.prefix_splits,
        )
        pad = self.num_items
        self.datasets["train"] = SequenceTensors(
            train + prefixes, index_of, self.max_history, pad, with_candidates=False
        )
        for split in ("val", "test"):
            self.datasets[split] = SequenceTensors(
                self.source.examples(split), index_of, self.max_history, pad, with_candidates=True
            )

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        if shuffle:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
        else:
            sampler = SequentialSampler(dataset)
        # The dataset slices whole batches itself; batch_size=None turns off collation.
        return DataLoader(
            dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
