"""Raw interactions: an ``interactions`` table (user, item, timestamp) and an ``items``
table (item, title), turned into chronological per-user sequences, split 8:1:1 by
user, with one example per position (the history: up to ``max_history`` preceding
items). The synthetic dataset is written in this format (:mod:`recpo.data.synthetic`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recpo.data.formats.catalog import clean_name, unique_names
from recpo.data.formats.tables import find_any, read_table
from recpo.data.records import SPLITS, Example, ItemCatalog, RecDataset
from recpo.errors import DataError


def read_raw(
    *,
    directory: str | Path,
    name: str,
    max_history: int = 10,
    min_history: int = 3,
    split_seed: int = 0,
    split_ratio: tuple[float, float, float] = (0.8, 0.1, 0.1),
    clean: dict | None = None,
) -> RecDataset:
    """Read ``interactions`` (user, item, timestamp) and ``items`` (item, title) from
    ``directory`` (each as ``.csv``, ``.parquet`` or ``.jsonl``).

    Each user's interactions are sorted by timestamp (ties keep file order). Users
    are shuffled with ``split_seed`` and split by ``split_ratio``; every position t
    of a user's sequence with at least ``min_history`` earlier items gives one
    example whose history is the ``max_history`` items before t. ``clean``: title
    cleaning (:func:`~recpo.data.formats.catalog.clean_name`).
    """
    directory = Path(directory)
    items_path = find_any(directory, "items")
    inter_path = find_any(directory, "interactions")
    items = read_table(items_path, ("item", "title"))
    names: dict[int, str] = {}
    key_to_id: dict[str, int] = {}
    for row, (key, title) in enumerate(zip(items["item"], items["title"])):
        key = str(key)
        if key in key_to_id:
            raise DataError(f"item {key!r} appears twice", items_path, row)
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"item {key!r} has no title", items_path, row)
        key_to_id[key] = len(names)
        names[len(names)] = clean_name(title, **(clean or {}))
    catalog = ItemCatalog(unique_names(names), len(names))

    inter = read_table(inter_path, ("user", "item", "timestamp"))
    item_ids = np.empty(len(inter), dtype=np.int64)
    for row, key in enumerate(inter["item"].astype(str)):
        if key not in key_to_id:
            raise DataError(f"unknown item {key!r} (not in {items_path.name})", inter_path, row)
        item_ids[row] = key_to_id[key]
    frame = pd.DataFrame(
        {
            "user": inter["user"].astype(str),
            "item": item_ids,
            "ts": inter["timestamp"],
            "row": np.arange(len(inter)),
        }
    )
    frame = frame.sort_values(["user", "ts", "row"], kind="stable")
    users = frame["user"].unique()
    order = np.random.default_rng(split_seed).permutation(len(users))
    n_train = int(round(split_ratio[0] * len(users)))
    n_val = int(round(split_ratio[1] * len(users)))
    split_of = {}
    for rank, u in enumerate(order):
        split_of[users[u]] = (
            "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        )
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for user, group in frame.groupby("user", sort=False):
        seq = group["item"].tolist()
        rows = group["row"].tolist()
        for t in range(min_history, len(seq)):
            hist = tuple(seq[max(0, t - max_history) : t])
            splits[split_of[user]].append(Example(hist, seq[t], None, rows[t]))
    return RecDataset(name, catalog, splits["train"], splits["val"], splits["test"])
