"""LLaRA's tables: ``train_data``, ``Val_data`` and ``Test_data`` with columns ``seq``
(the last <=10 item ids, right-padded with the padding id), ``len_seq`` and ``next``,
plus an item catalogue (:mod:`recpo.data.formats.catalog`).

``seq`` entries and ``next`` are item ids or tuples whose first value is the item id
(LLaRA's MovieLens files hold ``(item, rating)`` pairs). Tables are read from
``.parquet`` or ``.jsonl``; pandas pickles (``.df``) only with ``allow_pickle=True``
because loading a pickle runs code (see :mod:`recpo.data.convert`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recpo.data.formats.catalog import CatalogFormat, read_catalog
from recpo.data.formats.tables import describe_value, find_table, read_table
from recpo.data.records import SPLITS, Example, ItemCatalog, RecDataset
from recpo.errors import DataError

log = logging.getLogger(__name__)

# The file stem of each split.
LLARA_FILES = {"train": "train_data", "val": "Val_data", "test": "Test_data"}


class _CellError(Exception):
    """A cell that is not what the table format expects (reported with file/row/column)."""


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is an integer (or an integral float), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _as_list(value: Any) -> list | None:
    """A list/tuple/array cell as a list; None when the value is not a sequence."""
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else None
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _item_value(value: Any) -> tuple[int, str]:
    """The item id of an entry and its kind: ``id`` (a plain integer) or ``pair``
    (a tuple whose first value is the item id, e.g. LLaRA's ``(item, rating)``)."""
    item = _integer(value)
    if item is not None:
        return item, "id"
    pair = _as_list(value)
    if pair is None:
        raise _CellError(
            f"expected an item id or an (item, rating) pair, got {describe_value(value)}"
        )
    if len(pair) < 2:
        raise _CellError(f"expected an (item, rating) pair, got {len(pair)} value(s): {pair!r}")
    item = _integer(pair[0])
    if item is None:
        raise _CellError(
            f"the first value of a pair must be the integer item id, got {describe_value(pair[0])}"
        )
    return item, "pair"


def parse_seq(cell: Any) -> list[int]:
    """Item ids of a ``seq`` cell: a list of ids, or of tuples whose first value is the id.

    Raises:
        _CellError: when the cell is not a list, an entry is neither an integer nor a
            tuple with an integer first value, or ids and tuples are mixed.
    """
    entries = _as_list(cell)
    if entries is None:
        raise _CellError(
            f"expected a list of item ids or (item, rating) pairs, got {describe_value(cell)}"
        )
    items, kinds = [], set()
    for pos, entry in enumerate(entries):
        try:
            item, kind = _item_value(entry)
        except _CellError as err:
            raise _CellError(f"entry {pos}: {err}") from None
        kinds.add(kind)
        if len(kinds) > 1:
            raise _CellError(f"entry {pos}: the list mixes plain item ids and (item, ...) pairs")
        items.append(item)
    return items


def parse_item(cell: Any) -> int:
    """The item id of a ``next`` cell: an id or a tuple whose first value is the id."""
    return _item_value(cell)[0]


def parse_count(cell: Any) -> int:
    """A non-negative integer cell (``len_seq``)."""
    value = _integer(cell)
    if value is None or value < 0:
        raise _CellError(f"expected a non-negative integer, got {describe_value(cell)}")
    return value


def llara_examples(
    df: pd.DataFrame, catalog: ItemCatalog, path: Path, min_history: int = 3
) -> list[Example]:
    """Rows of a LLaRA table as examples; rows with fewer than ``min_history``
    real history items are dropped, as in prior loaders."""
    examples = []
    pad = catalog.padding_id
    dropped = 0
    for row, cells in enumerate(zip(df["seq"], df["len_seq"], df["next"])):
        parsed = []
        for column, parse, cell in zip(
            ("seq", "len_seq", "next"), (parse_seq, parse_count, parse_item), cells
        ):
            try:
                parsed.append(parse(cell))
            except _CellError as err:
                raise DataError(str(err), path, row, column) from None
        seq, len_seq, target = parsed
        if len_seq > len(seq):
            raise DataError(
                f"len_seq={len_seq} but seq has {len(seq)} entries", path, row, "len_seq"
            )
        history = tuple(s for s in seq[:len_seq] if s != pad)
        if len(history) < min_history:
            dropped += 1
            continue
        unknown = [s for s in history if s not in catalog]
        if unknown:
            raise DataError(
                f"unknown item id(s) {unknown} in seq (not in the item catalog)", path, row, "seq"
            )
        if target not in catalog:
            raise DataError(
                f"unknown target item id {target} (not in the item catalog)", path, row, "next"
            )
        examples.append(Example(history, target, None, row))
    if dropped:
        log.info(
            "%s: dropped %d rows with fewer than %d history items", path.name, dropped, min_history
        )
    return examples


def read_llara(
    *,
    directory: str | Path,
    name: str,
    padding_id: int | None = None,
    files: dict[str, str] | None = None,
    allow_pickle: bool = False,
    min_history: int = 3,
    clean: dict | None = None,
    catalog: dict | CatalogFormat | None = None,
) -> RecDataset:
    """Read a LLaRA-format folder (see the module docstring).

    Args:
        directory: The dataset's folder.
        name: The dataset's name.
        padding_id: The item id that pads ``seq`` (default: the item count).
        files: File stems of some splits, replacing :data:`LLARA_FILES`' (e.g.
            ``{train: train_sample_1000}``).
        allow_pickle: Read pandas pickles (``.df``) when no parquet or JSONL is present.
        min_history: Rows with fewer real history items are dropped.
        clean: Title cleaning (:func:`~recpo.data.formats.catalog.clean_name`).
        catalog: How to read the item catalog (a :class:`CatalogFormat` or its
            fields); ``None`` reads ``id2name.txt``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("data folder not found; set paths.data_dir (or RECPO_DATA_DIR)", directory)
    fmt = catalog if isinstance(catalog, CatalogFormat) else CatalogFormat.from_config(catalog)
    items = read_catalog(path=directory / fmt.file, padding_id=padding_id, fmt=fmt, clean=clean)
    files = {**LLARA_FILES, **(files or {})}
    splits = {}
    for split in SPLITS:
        path = find_table(directory, files[split], allow_pickle)
        df = read_table(path, ("seq", "len_seq", "next"))
        splits[split] = llara_examples(df, items, path, min_history)
    origins = {split: {files[split]: len(splits[split])} for split in SPLITS}
    return RecDataset(name, items, splits["train"], splits["val"], splits["test"], origins=origins)
