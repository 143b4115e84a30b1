"""Readers for the three on-disk formats, all producing :class:`RecDataset`.

* LLaRA: ``train_data``, ``Val_data``, ``Test_data`` tables with columns ``seq``
  (last <=10 item ids, right-padded with the padding id), ``len_seq`` and ``next``,
  plus an item catalog: ``id2name.txt`` (``id::name`` per line) by default, or any
  delimited file such as MovieLens' ``u.item`` (``id|title|date|...``, latin-1)
  described by a :class:`CatalogFormat`. ``seq`` entries and ``next`` are item ids
  or tuples whose first value is the item id (LLaRA's MovieLens files hold
  ``(item, rating)`` pairs). Tables are read from ``.parquet`` or ``.jsonl``;
  pandas pickles (``.df``) only with ``allow_pickle=True`` because loading a
  pickle runs code (see :mod:`recpo.data.convert`).
* S-DPO JSON: a list of ``{"historyList", "itemList", "trueSelection"}`` rows.
* Raw: ``interactions`` (user, item, timestamp) and ``items`` (item, title) tables,
  turned into chronological per-user sequences, split 8:1:1 by user, with one
  example per position (history = up to ``max_history`` preceding items).
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recpo.data.errors import DataError
from recpo.data.records import Example, ItemCatalog, RecDataset

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LLARA_FILES = {"train": "train_data", "val": "Val_data", "test": "Test_data"}
SAFE_SUFFIXES = (".parquet", ".jsonl")


# ---------------------------------------------------------------- names


def clean_name(
    name: str,
    strip_parenthetical: bool = False,
    max_chars: int | None = None,
    leading_article: bool = False,
) -> str:
    """Normalise an item title for prompts: collapse whitespace, optionally drop
    trailing ``(...)`` groups (Goodreads series info, MovieLens years), move a
    trailing English article to the front (MovieLens: "Godfather, The (1972)" ->
    "The Godfather (1972)") and cap the length."""
    out = " ".join(name.split())
    if leading_article:
        out = re.sub(r"^(.+), (The|A|An)((?: \([^()]*\))*)$", r"\2 \1\3", out)
    if strip_parenthetical:
        out = re.sub(r"\s*\([^()]*\)\s*$", "", out).strip() or out
    if max_chars is not None and len(out) > max_chars:
        out = out[:max_chars].rstrip()
    return out


def _unique_names(names: dict[int, str]) -> dict[int, str]:
    """Make display names unique (a title must identify its item in a prompt)."""
    seen: dict[str, int] = {}
    out = {}
    for item, name in names.items():
        if name in seen:
            new = f"{name} (#{item})"
            log.warning(
                "item %s has the same name as item %s (%r); using %r", item, seen[name], name, new
            )
            name = new
        seen[name] = item
        out[item] = name
    return out


@dataclass(frozen=True)
class CatalogFormat:
    """How to read an item catalog file (``data.source.catalog``).

    Attributes:
        file: File name inside the dataset folder.
        format: ``id2name`` (``id<sep>title``, the title is the rest of the line) or
            ``delimited`` (every line split at each separator; id and title are
            picked by position, as in MovieLens' ``u.item``).
        separator: Field separator (``::`` for id2name, e.g. ``|`` for u.item).
        encoding: Text encoding of the file (``utf-8``, ``latin-1``, ...).
        id_field: Position of the item id (delimited only).
        title_field: Position of the title (delimited only).
        id_offset: Added to each id of the file to give the id used in the tables
            (MovieLens' u.item counts from 1, LLaRA's tables from 0: ``-1``).
    """

    file: str = "id2name.txt"
    format: str = "id2name"
    separator: str = "::"
    encoding: str = "utf-8"
    id_field: int = 0
    title_field: int = 1
    id_offset: int = 0

    @classmethod
    def from_config(cls, node: dict | None) -> CatalogFormat:
        node = dict(node or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(node) - known)
        if unknown:
            raise DataError(
                f"unknown key(s) {unknown} in data.source.catalog; expected some of {sorted(known)}"
            )
        fmt = cls(**{k: v for k, v in node.items() if v is not None})
        if fmt.format not in ("id2name", "delimited"):
            raise DataError(
                f"data.source.catalog.format must be id2name or delimited, got {fmt.format!r}"
            )
        if not fmt.separator:
            raise DataError("data.source.catalog.separator must not be empty")
        try:
            codecs.lookup(fmt.encoding)
        except LookupError:
            raise DataError(
                f"unknown text encoding {fmt.encoding!r} in data.source.catalog.encoding"
            ) from None
        return fmt


def read_catalog(
    path: str | Path,
    padding_id: int | None = None,
    fmt: CatalogFormat | None = None,
    clean: dict | None = None,
) -> ItemCatalog:
    """Read an item catalog (``id2name.txt`` or a delimited file like ``u.item``).

    The padding id defaults to the item count; it must not be an item id itself.
    """
    path = Path(path)
    fmt = fmt or CatalogFormat(file=path.name)
    sep = fmt.separator
    if fmt.format == "id2name":
        expected = f"'id{sep}name'"
        fields_needed = 2
    else:
        fields_needed = max(fmt.id_field, fmt.title_field) + 1
        expected = f"at least {fields_needed} fields separated by {sep!r}"
    if not path.is_file():
        raise DataError(f"file not found; expected an item catalog with {expected} per line", path)
    names: dict[int, str] = {}
    for row, line in enumerate(path.read_bytes().splitlines()):
        try:
            text = line.decode(fmt.encoding)
        except UnicodeDecodeError as err:
            raise DataError(
                f"title is not valid {fmt.encoding.upper()} ({err.reason} at byte {err.start}); "
                "set data.source.catalog.encoding to the file's encoding",
                path,
                row,
            ) from None
        if not text.strip():
            continue
        if fmt.format == "id2name":
            fields = text.split(sep, 1)
            key_field, title_field = 0, 1
        else:
            fields = text.split(sep)
            key_field, title_field = fmt.id_field, fmt.title_field
        if len(fields) < fields_needed:
            raise DataError(f"expected {expected}, got {text!r}", path, row)
        key = fields[key_field].strip()
        try:
            item = int(key) + fmt.id_offset
        except ValueError:
            raise DataError(f"item id {key!r} is not an integer", path, row) from None
        if item in names:
            raise DataError(f"item id {item} appears twice", path, row)
        name = clean_name(fields[title_field], **(clean or {}))
        if not name:
            raise DataError(f"item {key} has an empty title", path, row)
        names[item] = name
    if not names:
        raise DataError("no items found", path)
    padding = len(names) if padding_id is None else int(padding_id)
    if padding in names:
        raise DataError(
            f"the padding id {padding} is also an item id; set data.source.padding_id "
            "(or data.source.catalog.id_offset if the file counts ids from 1)",
            path,
        )
    return ItemCatalog(_unique_names(names), padding)


def read_id2name(path: str | Path, padding_id: int | None = None, **clean) -> ItemCatalog:
    """Read ``id::name`` lines into a catalog (padding id defaults to the item count)."""
    return read_catalog(path, padding_id, CatalogFormat(file=Path(path).name), clean)


# ---------------------------------------------------------------- tables


def find_table(directory: Path, stem: str, allow_pickle: bool) -> Path:
    """Locate ``stem`` in a safe format, or as a pickle when allowed."""
    for suffix in SAFE_SUFFIXES:
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    pickle = directory / f"{stem}.df"
    if pickle.is_file():
        if allow_pickle:
            return pickle
        raise DataError(
            "only a pandas pickle is present, and loading a pickle can run arbitrary code. "
            f"Convert it once with `python -m recpo.data.convert {directory}` (writes .parquet), "
            "or set data.source.allow_pickle=true if you trust the file",
            pickle,
        )
    raise DataError(
        f"file not found; expected {stem}.parquet, {stem}.jsonl or (with allow_pickle) {stem}.df",
        directory / stem,
    )


def read_table(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    """Read a parquet / JSONL / pickle table and check its columns."""
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix == ".jsonl":
            df = pd.read_json(path, lines=True)
        elif path.suffix == ".csv":
            df = pd.read_csv(path)
        elif path.suffix == ".df":
            df = pd.read_pickle(path)
        else:
            raise DataError(f"unsupported file type {path.suffix!r}", path)
    except DataError:
        raise
    except UnicodeDecodeError as err:
        raise DataError(f"file is not valid UTF-8 ({err.reason})", path) from None
    except Exception as err:  # noqa: BLE001 - report any parser failure against the file
        raise DataError(f"cannot read table: {err}", path) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", path)
    return df


class _CellError(Exception):
    """A cell that is not what the table format expects (reported with file/row/column)."""


def _describe(value: Any) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return f"a missing value ({value!r})"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


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
        raise _CellError(f"expected an item id or an (item, rating) pair, got {_describe(value)}")
    if len(pair) < 2:
        raise _CellError(f"expected an (item, rating) pair, got {len(pair)} value(s): {pair!r}")
    item = _integer(pair[0])
    if item is None:
        raise _CellError(
            f"the first value of a pair must be the integer item id, got {_describe(pair[0])}"
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
            f"expected a list of item ids or (item, rating) pairs, got {_describe(cell)}"
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
        raise _CellError(f"expected a non-negative integer, got {_describe(cell)}")
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
    directory: str | Path,
    name: str,
    padding_id: int | None = None,
    files: dict[str, str] | None = None,
    allow_pickle: bool = False,
    min_history: int = 3,
    clean: dict | None = None,
    catalog: dict | CatalogFormat | None = None,
) -> RecDataset:
    """Read a LLaRA-format folder (see module docstring).

    Args:
        catalog: How to read the item catalog (a :class:`CatalogFormat` or its
            fields); ``None`` reads ``id2name.txt``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("data folder not found; set paths.data_dir (or RECPO_DATA_DIR)", directory)
    fmt = catalog if isinstance(catalog, CatalogFormat) else CatalogFormat.from_config(catalog)
    items = read_catalog(directory / fmt.file, padding_id, fmt, clean)
    files = {**LLARA_FILES, **(files or {})}
    splits = {}
    for split in SPLITS:
        path = find_table(directory, files[split], allow_pickle)
        df = read_table(path, ("seq", "len_seq", "next"))
        splits[split] = llara_examples(df, items, path, min_history)
    return RecDataset(name, items, splits["train"], splits["val"], splits["test"])


# ---------------------------------------------------------------- S-DPO JSON


def split_history(text: str, known: dict[str, int] | None = None) -> list[str]:
    """Split an S-DPO ``historyList`` ("a::b::c") into titles.

    Titles may contain ":" themselves (LastFM has ":wumpscut:"), which makes a plain
    ``split("::")`` wrong. With ``known`` titles, the string is segmented into known
    titles joined by "::" (the first segmentation found, scanning left to right);
    without, or when no segmentation exists, it falls back to ``split("::")``.
    """
    if not text:
        return []
    plain = [h for h in text.split("::") if h]
    if known is None or all(h in known for h in plain):
        return plain
    cuts = [k for k in range(len(text) - 1) if text.startswith("::", k)] + [len(text)]
    memo: dict[int, list[str] | None] = {}

    def parse(i: int) -> list[str] | None:
        if i == len(text):
            return []
        if i not in memo:
            memo[i] = None
            for k in cuts:
                if k > i and text[i:k] in known:
                    rest = parse(k) if k == len(text) else parse(k + 2)
                    if rest is not None:
                        memo[i] = [text[i:k], *rest]
                        break
        return memo[i]

    return parse(0) or plain


def _is_titles(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def read_sdpo_json(
    paths: dict[str, str | Path],
    name: str,
    catalog: ItemCatalog | None = None,
    clean: dict | None = None,
) -> RecDataset:
    """Read S-DPO JSON files (one per split). Names are mapped to ids through
    ``catalog`` when given; otherwise a catalog is built from the names seen."""
    clean = clean or {}
    build = catalog is None
    names: dict[int, str] = {} if build else dict(catalog.names)
    by_name = {} if build else {n: i for i, n in catalog.names.items()}

    def lookup(title: str, path: Path, row: int, what: str) -> int:
        title = clean_name(title, **clean)
        if title in by_name:
            return by_name[title]
        if not build:
            raise DataError(f"unknown {what} {title!r} (not in the item catalog)", path, row)
        by_name[title] = len(names)
        names[len(names)] = title
        return by_name[title]

    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        path = Path(paths[split])
        if not path.is_file():
            raise DataError("file not found; expected an S-DPO JSON list", path)
        try:
            rows = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(
                f"file is not valid UTF-8 ({err.reason} at byte {err.start})", path
            ) from None
        except json.JSONDecodeError as err:
            raise DataError(f"invalid JSON: {err}", path) from None
        if not isinstance(rows, list):
            raise DataError("expected a JSON list of rows", path)
        examples = []
        for row, obj in enumerate(rows):
            if not isinstance(obj, dict):
                raise DataError(
                    f"expected an object with historyList, itemList and trueSelection, "
                    f"got {_describe(obj)}",
                    path,
                    row,
                )
            missing = [k for k in ("historyList", "itemList", "trueSelection") if k not in obj]
            if missing:
                raise DataError(f"missing key(s) {missing}", path, row)
            hist = obj["historyList"]
            if isinstance(hist, str):
                hist = split_history(hist, by_name if not build else None)
            elif not _is_titles(hist):
                raise DataError(
                    f"expected a '::'-joined string or a list of titles, got {_describe(hist)}",
                    path,
                    row,
                    "historyList",
                )
            if not hist:
                raise DataError(
                    "empty history; expected at least one item in historyList", path, row
                )
            if not _is_titles(obj["itemList"]):
                raise DataError(
                    f"expected a list of titles, got {_describe(obj['itemList'])}",
                    path,
                    row,
                    "itemList",
                )
            if not isinstance(obj["trueSelection"], str):
                raise DataError(
                    f"expected a title, got {_describe(obj['trueSelection'])}",
                    path,
                    row,
                    "trueSelection",
                )
            history = tuple(lookup(h, path, row, "history item") for h in hist)
            target = lookup(obj["trueSelection"], path, row, "trueSelection")
            cands = tuple(lookup(c, path, row, "candidate") for c in obj["itemList"])
            examples.append(Example(history, target, cands, row))
        splits[split] = examples
    cat = ItemCatalog(names, len(names)) if build else catalog
    return RecDataset(name, cat, splits["train"], splits["val"], splits["test"])


# ---------------------------------------------------------------- raw interactions


def _find_any(directory: Path, stem: str) -> Path:
    for suffix in (".csv", *SAFE_SUFFIXES):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    raise DataError(
        f"file not found; expected {stem}.csv, {stem}.parquet or {stem}.jsonl", directory / stem
    )


def read_raw(
    directory: str | Path,
    name: str,
    max_history: int = 10,
    min_history: int = 3,
    split_seed: int = 0,
    split_ratio: tuple[float, float, float] = (0.8, 0.1, 0.1),
    clean: dict | None = None,
) -> RecDataset:
    """Read ``interactions`` (user, item, timestamp) and ``items`` (item, title).

    Each user's interactions are sorted by timestamp (ties keep file order). Users
    are shuffled with ``split_seed`` and split by ``split_ratio``; every position t
    of a user's sequence with at least ``min_history`` earlier items gives one
    example whose history is the ``max_history`` items before t.
    """
    directory = Path(directory)
    items_path = _find_any(directory, "items")
    inter_path = _find_any(directory, "interactions")
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
    catalog = ItemCatalog(_unique_names(names), len(names))

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
