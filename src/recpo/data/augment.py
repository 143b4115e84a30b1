"""Training rows from val users, for data whose training file is only a sample (Steam
here): :func:`augment_train_from_val_users` moves a share of the val users into
training as history-prefix rows, never a user whose sequence may continue into a
test row. ``data.source.augment_train_from_val`` sets the share.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from recpo.data.records import SPLITS, Example, RecDataset
from recpo.errors import DataError

log = logging.getLogger(__name__)

# A val row and a test row are taken to belong to the same user when the last
# (up to) this many items of one's sequence (history + target) occur, in order and
# contiguously, in the other's history.
LINK_ITEMS = 5
AUGMENTED_ORIGIN = "val history prefixes"


def _sequence(ex: Example) -> tuple[int, ...]:
    return (*ex.history, ex.target)


def _windows(seq: tuple[int, ...], sizes: Iterable[int]) -> set[tuple[int, ...]]:
    return {seq[i : i + k] for k in sizes for i in range(len(seq) - k + 1)}


def rows_linked_to(rows: list[Example], others: list[Example]) -> set[int]:
    """Indices of ``rows`` that may belong to the same user as some row of ``others``.

    The tables carry no user id. A user's later row holds the end of an earlier
    row's sequence (history + target) in its history, so two rows are linked when
    the last ``LINK_ITEMS`` items (fewer for shorter sequences) of one's sequence
    occur contiguously in the other's history, in either direction. Chance
    matches only make the check more cautious.
    """
    other_tails = {_sequence(o)[-LINK_ITEMS:] for o in others}
    other_windows: set[tuple[int, ...]] = set()
    for o in others:
        other_windows |= _windows(o.history, range(2, LINK_ITEMS + 1))
    tail_sizes = sorted({len(t) for t in other_tails})
    linked = set()
    for i, ex in enumerate(rows):
        if _sequence(ex)[-LINK_ITEMS:] in other_windows or (
            _windows(ex.history, tail_sizes) & other_tails
        ):
            linked.add(i)
    return linked


def group_users(rows: list[Example], max_history: int) -> list[list[int]]:
    """Group rows into users: row B follows row A when B's history is the end of A's
    sequence (the last ``max_history`` items of A's history + target), which is how
    every prefix of one user's sequence becomes a row (LastFM's held-out users).
    Groups are lists of row indices in file order, ordered by their first row."""
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_end: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, ex in enumerate(rows):
        by_end[_sequence(ex)[-max_history:]].append(i)
    for j, ex in enumerate(rows):
        for i in by_end.get(ex.history, ()):
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        groups[root(i)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def prefix_examples(ex: Example, min_history: int, max_history: int) -> list[Example]:
    """Every next-item step of a row's sequence (history + target) with at least
    ``min_history`` earlier items, the history cut to the last ``max_history``."""
    seq = _sequence(ex)
    return [
        Example(seq[max(0, t - max_history) : t], seq[t], None, ex.row)
        for t in range(min_history, len(seq))
    ]


def user_examples(rows: list[Example], min_history: int, max_history: int) -> list[Example]:
    """Training rows from one user's rows: every step of each row's sequence
    (:func:`prefix_examples`), except steps another row of the user already shows
    with at least as much history (LastFM-style users, whose every prefix is a
    row, give back their own rows plus the first steps), each step once."""
    by_target: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for ex in rows:
        by_target[ex.target].append(ex.history)
    out, seen = [], set()
    for ex in rows:
        for step in prefix_examples(ex, min_history, max_history):
            key = (step.history, step.target)
            n = len(step.history)
            covered = any(
                len(h) > n and h[len(h) - n :] == step.history for h in by_target[step.target]
            )
            if key not in seen and not covered:
                seen.add(key)
                out.append(step)
    return out


def augment_train_from_val_users(
    ds: RecDataset, fraction: float, seed: int, min_history: int = 3, max_history: int = 10
) -> RecDataset:
    """Move a share of the val users into training, as history-prefix rows.

    For data whose training file is only a sample (Steam here), this adds training
    rows without touching the test split. Val rows are grouped into users
    (:func:`group_users`); ``round(fraction * users)`` users, drawn with ``seed``,
    leave val, and every step of their sequences (history + val target) with at
    least ``min_history`` earlier items becomes a training row. Val users whose
    sequence may continue into a test row (:func:`rows_linked_to`) are never
    moved. Validation uses the remaining val users; test is unchanged.

    Args:
        ds: The dataset as read.
        fraction: Share of the val users to move, in [0, 1).
        seed: Which users move (a fixed seed gives the same split for every run).
        min_history: Fewest history items of a new training row.
        max_history: History window of the new rows (the tables' ``seq`` width).
    """
    if not 0 <= fraction < 1:
        raise DataError(
            f"data.source.augment_train_from_val must be in [0, 1) (a share of the val users; "
            f"1 would leave nothing to validate on), got {fraction}"
        )
    groups = group_users(ds.val, max_history)
    linked = rows_linked_to(ds.val, ds.test)
    eligible = [g for g in groups if not linked.intersection(g)]
    n_move = int(round(fraction * len(groups)))
    if n_move > len(eligible):
        log.warning(
            "%s: %d of %d val users may continue into test rows and stay in val; "
            "moving %d users instead of %d",
            ds.name,
            len(groups) - len(eligible),
            len(groups),
            len(eligible),
            n_move,
        )
        n_move = len(eligible)
    order = np.random.default_rng([seed, 2_147_483_629]).permutation(len(eligible))
    moved_set = {i for k in order[:n_move] for i in eligible[k]}
    added: list[Example] = []
    for k in sorted(order[:n_move], key=lambda k: eligible[k][0]):
        added.extend(user_examples([ds.val[i] for i in eligible[k]], min_history, max_history))
    val = [ex for i, ex in enumerate(ds.val) if i not in moved_set]
    origins = {s: dict(ds.origins.get(s) or {s: len(ds.split(s))}) for s in SPLITS}
    origins["train"][f"{AUGMENTED_ORIGIN} ({n_move} of {len(groups)} val users)"] = len(added)
    origins["val"] = {
        f"{name}, the other {len(groups) - n_move} val users": len(val) for name in origins["val"]
    }
    log.info(
        "%s: %d training rows from the sequences of %d of %d val users (seed %d); "
        "%d val rows left; %d val users linked to test rows were not eligible",
        ds.name,
        len(added),
        n_move,
        len(groups),
        seed,
        len(val),
        len(groups) - len(eligible),
    )
    return replace(ds, train=[*ds.train, *added], val=val, origins=origins)
