"""The training loader: a shuffle that depends only on (seed, epoch), and a loader that
Lightning can resume in the middle of an epoch.

A checkpoint written mid-epoch (``trainer.val_check_interval`` < 1 saves ``last.ckpt``
at each validation) records how many batches of the epoch were trained. Lightning then
runs only the epoch's remaining batches, but a plain DataLoader starts the epoch's order
again from its first batch: the resumed run would train on the first batches twice and
never on the last ones. :class:`ResumableLoader` keeps, in the checkpoint, the number of
batches it handed out in the current pass and skips that many on the first pass after a
restore, so a resumed run trains on exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a
    checkpoint sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())


class ResumableLoader(DataLoader):
    """A DataLoader with ``state_dict`` / ``load_state_dict``: the batches handed out
    in the current pass over the data.

    After ``load_state_dict``, the next pass skips the batches the checkpoint had
    already trained on (they are drawn and dropped, so every per-index draw of the
    dataset and any sampler, distributed or not, stays as in the uninterrupted run). A
    state at the end of a pass skips nothing: the next pass is a new epoch. The skip is
    read at the pass's first batch, not at ``iter()``: Lightning may build the iterator
    before it restores the state, and sets the sampler's epoch after ``iter()``. The
    count is exact because Lightning does not fetch ahead from a loader whose length it
    knows.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._handed_out = 0
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = int(state["batches"])
        self._skip = batches if 0 < batches < len(self) else 0

    def __iter__(self) -> Iterator[Any]:
        return self._pass(super().__iter__())

    def _pass(self, batches: Iterator[Any]) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        self._handed_out = skip
        for _ in range(skip):
            next(batches)
        for batch in batches:
            self._handed_out += 1
            yield batch
