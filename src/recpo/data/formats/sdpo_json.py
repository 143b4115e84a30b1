"""S-DPO's JSON rows, one file per split: a list of ``{"historyList", "itemList",
"trueSelection"}`` objects, titles rather than ids, candidates given in the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recpo.data.formats.catalog import CatalogFormat, clean_name, read_catalog
from recpo.data.formats.tables import describe_value
from recpo.data.records import SPLITS, Example, ItemCatalog, RecDataset
from recpo.errors import DataError


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
    *,
    directory: str | Path,
    name: str,
    files: dict[str, str] | None = None,
    padding_id: int | None = None,
    catalog: dict | CatalogFormat | None = None,
    clean: dict | None = None,
) -> RecDataset:
    """Read an S-DPO JSON folder: ``<name>-{train,val,test}.json`` and, when present,
    the item catalog (``id2name.txt`` unless ``catalog`` says otherwise).

    Args:
        directory: The dataset's folder.
        name: The dataset's name (and the files' prefix).
        files: File names of some splits, replacing ``<name>-<split>.json``.
        padding_id: The catalog's padding id (default: the item count).
        catalog: How to read the item catalog (a :class:`CatalogFormat` or its fields).
        clean: Title cleaning (:func:`~recpo.data.formats.catalog.clean_name`).
    """
    directory = Path(directory)
    stems = {split: f"{name}-{split}.json" for split in SPLITS}
    stems.update(files or {})
    fmt = catalog if isinstance(catalog, CatalogFormat) else CatalogFormat.from_config(catalog)
    items = None
    if (directory / fmt.file).is_file():
        items = read_catalog(path=directory / fmt.file, padding_id=padding_id, fmt=fmt, clean=clean)
    paths = {split: directory / stem for split, stem in stems.items()}
    return sdpo_examples(paths, name, items, clean)


def sdpo_examples(
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
                    f"got {describe_value(obj)}",
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
                    f"expected a '::'-joined string or a list of titles, got {describe_value(hist)}",
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
                    f"expected a list of titles, got {describe_value(obj['itemList'])}",
                    path,
                    row,
                    "itemList",
                )
            if not isinstance(obj["trueSelection"], str):
                raise DataError(
                    f"expected a title, got {describe_value(obj['trueSelection'])}",
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
