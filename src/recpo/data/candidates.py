"""Candidate lists: the target plus 19 sampled negatives, under one of two protocols.

``published`` (the default) builds them the way the published S-DPO files were
made: for each row, seed Python's ``random`` with the target id, sample 19 ids
from the items (in catalog order) that are neither in the visible history nor the
target, append the target, then reseed with the target id and shuffle the 20 ids.
Rebuilding the LastFM candidates this way reproduces ``lastfm-val.json`` and
``lastfm-test.json`` row for row. Lists given in the data files are kept.

Because the seed is the target, rows with the same target get nearly the same
list: a LastFM test row shares on average about 12 of its 19 negatives with some
training row of the same target, a shortcut a model can learn (see
:mod:`recpo.data.shortcut`). ``independent`` draws each row's list with the same
exclusion rules from a generator seeded by the run seed, the split and the row's
position in the split, never by the target; it replaces lists given in the files.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections.abc import Iterator, Sequence

import numpy as np

from recpo.data.records import Example, ItemCatalog
from recpo.errors import DataError

log = logging.getLogger(__name__)


class _ItemsExcept(Sequence):
    """A read-only view of ``items`` without the positions in ``skip``.

    ``random.sample`` only needs ``len`` and indexing, so sampling from this view
    gives exactly what sampling from the materialised list gives, without building
    a 4,000-item list per row.
    """

    def __init__(self, items: Sequence[int], skip: list[int]):
        self._items = items
        self._skip = skip  # sorted positions in ``items``

    def __len__(self) -> int:
        return len(self._items) - len(self._skip)

    def __getitem__(self, index: int) -> int:  # type: ignore[override]
        if index < 0:
            index += len(self)
        # Smallest position p with p - (#skipped positions <= p) == index.
        pos = index
        while True:
            shift = bisect.bisect_right(self._skip, pos)
            if pos - shift == index and (shift == 0 or self._skip[shift - 1] != pos):
                return self._items[pos]
            pos = index + shift

    def __iter__(self) -> Iterator[int]:
        skip = set(self._skip)
        return (item for i, item in enumerate(self._items) if i not in skip)


PROTOCOLS = ("published", "independent")


def sample_candidates(
    history: Sequence[int],
    target: int,
    items: Sequence[int],
    position: dict[int, int],
    num_candidates: int = 20,
    seed: int | str | None = None,
) -> tuple[int, ...]:
    """The candidate list of one row, in display order (target included).

    Args:
        history: Visible history item ids (padding removed).
        target: The next item id.
        items: All item ids in catalog order.
        position: ``item id -> index in items``.
        num_candidates: Length of the list (target + ``num_candidates - 1`` negatives).
        seed: ``None`` for the published procedure (seeded by the target, reseeded
            before the shuffle); otherwise the seed of one generator that draws the
            negatives and then shuffles.
    """
    excluded = {position[i] for i in history if i in position}
    excluded.add(position[target])
    pool = _ItemsExcept(items, sorted(excluded))
    if len(pool) < num_candidates - 1:
        raise ValueError(
            f"only {len(pool)} items are outside the history and target; "
            f"need {num_candidates - 1} negatives"
        )
    rng = random.Random(target if seed is None else seed)
    ids = rng.sample(pool, num_candidates - 1) + [target]
    if seed is None:
        rng.seed(target)
    rng.shuffle(ids)
    return tuple(ids)


def independent_seed(run_seed: int, split: str, index: int) -> str:
    """The generator seed of a row under the ``independent`` protocol (no target in it).

    A string seed is hashed with SHA-512 by :mod:`random`, so it is the same in
    every process and Python version 3.2+.
    """
    return f"recpo-candidates:{run_seed}:{split}:{index}"


def attach_candidates(
    examples: list[Example],
    catalog: ItemCatalog,
    num_candidates: int = 20,
    source: str = "",
    protocol: str = "published",
    seed: int = 0,
    split: str = "",
) -> list[Example]:
    """Return the examples with candidate lists.

    Args:
        examples: Rows of one split.
        catalog: The items (sampling enumerates them in catalog order).
        num_candidates: Target + negatives.
        source: Names the split in error messages.
        protocol: ``published`` (lists given in the files are kept; the others are
            built as the S-DPO files were) or ``independent`` (every list drawn
            anew, seeded by ``seed``, ``split`` and the row's position).
        seed: The run seed (``independent`` only).
        split: The split name (``independent`` only; rows of different splits
            get different draws).
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"data.candidates must be one of {list(PROTOCOLS)}, got {protocol!r}")
    items = catalog.item_ids
    position = {item: i for i, item in enumerate(items)}
    out = []
    replaced = 0
    for index, ex in enumerate(examples):
        if ex.candidates is not None:
            if protocol == "published":
                out.append(ex)
                continue
            replaced += 1
        if ex.target not in position:
            raise DataError(f"target item {ex.target} is not in the item catalog", source, ex.row)
        row_seed = None if protocol == "published" else independent_seed(seed, split, index)
        try:
            cands = sample_candidates(
                ex.history, ex.target, items, position, num_candidates, row_seed
            )
        except ValueError as err:
            raise DataError(str(err), source, ex.row) from None
        out.append(Example(ex.history, ex.target, cands, ex.row))
    if replaced:
        log.info(
            "%s: candidates=independent replaced the %d candidate lists given in the file",
            source,
            replaced,
        )
    return out


def validate_candidates(
    examples: list[Example], min_candidates: int, source: str, catalog: ItemCatalog | None = None
) -> None:
    """Check every candidate list: target present, no duplicates, long enough, known ids."""
    for ex in examples:
        cands = ex.candidates
        if cands is None:
            raise DataError("row has no candidate list", source, ex.row)
        if ex.target not in cands:
            raise DataError(
                f"target item {ex.target} is absent from its candidates {list(cands)}",
                source,
                ex.row,
            )
        if len(set(cands)) != len(cands):
            dups = sorted({c for c in cands if cands.count(c) > 1})
            raise DataError(
                f"duplicate candidates {dups}; each candidate must be distinct", source, ex.row
            )
        if len(cands) < min_candidates:
            raise DataError(
                f"{len(cands)} candidates, expected at least {min_candidates} "
                f"(the target plus the requested number of negatives)",
                source,
                ex.row,
            )
        if catalog is not None:
            unknown = [c for c in cands if c not in catalog]
            if unknown:
                raise DataError(f"unknown candidate item ids {unknown}", source, ex.row)


def negative_choices(
    num_examples: int, num_negatives: int, pool_size: int, seed: int, epoch: int | None = None
) -> np.ndarray:
    """Which of the non-target candidates each example uses as negatives.

    Args:
        num_examples: Number of examples.
        num_negatives: K, the negatives per example.
        pool_size: Non-target candidates per example (19 for 20 candidates).
        seed: Base seed; the same seed gives the same negatives.
        epoch: ``None`` for a draw that stays fixed across epochs; an epoch number
            for a fresh draw per epoch (still reproducible).

    Returns:
        Integer array ``(num_examples, num_negatives)`` of indices into the
        non-target candidates, each row without repeats, in drawn order.
    """
    if not 1 <= num_negatives <= pool_size:
        raise ValueError(f"num_negatives must be in 1..{pool_size}, got {num_negatives}")
    key = [seed] if epoch is None else [seed, epoch + 1]
    rng = np.random.default_rng(key)
    # argsort of uniform noise gives an independent random permutation per row.
    order = np.argsort(rng.random((num_examples, pool_size)), axis=1, kind="stable")
    return order[:, :num_negatives]
