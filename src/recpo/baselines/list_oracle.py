"""The list oracle: a model-free, training-free ranker that reads the target off the
candidate list.

Under the ``published`` protocol a row's list is a function of its visible history,
its target and the catalogue only (:func:`recpo.data.candidates.sample_candidates` with
``seed=None``). Re-running that procedure for each of the row's candidates, as if it were
the target and with the row's own history, gives back the row's list (same ids, same
order) for the target and, on the project's data, for no other candidate. The oracle
scores a candidate 1 when it reproduces the list and 0 otherwise. Under ``independent``
the lists are drawn without the target, no candidate reproduces them, every score is 0
and, ties counting against the model, every rank metric is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from recpo.data.candidates import sample_candidates
from recpo.data.records import Example, ItemCatalog
from recpo.errors import DataError


def reproducing_candidates(
    ex: Example, items: Sequence[int], position: dict[int, int]
) -> list[bool]:
    """For each candidate of ``ex``: does the published procedure, run with that
    candidate as the target and ``ex``'s history, give ``ex``'s list in its order?

    Args:
        ex: A row with its candidate list.
        items: All item ids in catalog order (the order the procedure samples from).
        position: ``item id -> index in items``.

    Returns:
        One flag per candidate, in display order.
    """
    cands = tuple(ex.candidates or ())
    if not cands:
        raise DataError("the list oracle needs a candidate list", row=ex.row)
    flags = []
    for c in cands:
        if c not in position:
            raise DataError(f"candidate {c} is not in the item catalog", row=ex.row)
        try:
            rebuilt = sample_candidates(ex.history, c, items, position, len(cands), seed=None)
        except ValueError:  # fewer items outside the history than the list needs
            rebuilt = None
        flags.append(rebuilt == cands)
    return flags


def list_oracle_scores(
    rows: Sequence[Example], catalog: ItemCatalog, train: Sequence[Example] = ()
) -> Tensor:
    """Scores ``(B, C)``: 1.0 where the candidate reproduces the row's list, else 0.0.

    Args:
        rows: Evaluation rows with candidate lists of one length ``C``.
        catalog: The item catalog the lists were sampled from.
        train: Unused (the oracle learns nothing); accepted so that every model-free
            scorer of ``recpo.baselines.pipeline`` is called the same way.
    """
    items = catalog.item_ids
    position = {item: i for i, item in enumerate(items)}
    flags = [reproducing_candidates(ex, items, position) for ex in rows]
    if len({len(f) for f in flags}) > 1:
        raise DataError("the list oracle needs candidate lists of one length")
    return torch.tensor(flags, dtype=torch.float64).reshape(len(rows), -1)
