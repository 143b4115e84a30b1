"""The training loader's resumption in the middle of an epoch (recpo.data.loader): the
state counts the batches of the current pass; a restored state skips them in the next
pass only; the skip is taken at the first batch, after the sampler's epoch is set."""

from __future__ import annotations

import torch

from recpo.data.loader import EpochShuffleSampler, ResumableLoader


def loader(size: int = 10, batch_size: int = 3) -> ResumableLoader:
    return ResumableLoader(
        list(range(size)),
        batch_size=batch_size,
        sampler=EpochShuffleSampler(size, seed=7),
        collate_fn=list,
        generator=torch.Generator().manual_seed(0),
    )


def test_the_state_counts_the_batches_of_the_current_pass():
    dl = loader()
    batches = iter(dl)
    assert dl.state_dict() == {"batches": 0}
    next(batches), next(batches)
    assert dl.state_dict() == {"batches": 2}
    list(batches)
    assert dl.state_dict() == {"batches": 4}  # 10 rows in batches of 3: 4 batches
    iter_again = iter(dl)
    next(iter_again)
    assert dl.state_dict() == {"batches": 1}


def test_a_restored_state_skips_the_trained_batches_of_that_epoch_once():
    full = loader()
    full.sampler.set_epoch(3)
    epoch3 = list(full)
    dl = loader()
    dl.load_state_dict({"batches": 2})
    batches = iter(dl)
    dl.sampler.set_epoch(3)  # as Lightning: the epoch is set after iter()
    assert list(batches) == epoch3[2:]
    assert dl.state_dict() == {"batches": 4}
    assert list(dl) == epoch3  # the next pass is whole


def test_a_state_at_the_end_of_a_pass_skips_nothing():
    dl = loader()
    whole = list(dl)
    for done in (0, 4):
        dl.load_state_dict({"batches": done})
        assert list(dl) == whole
