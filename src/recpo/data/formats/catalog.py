"""Item catalogues: the id and display name of every item.

``id2name.txt`` (``id::name`` per line, LLaRA's and S-DPO's) by default, or any
delimited file such as MovieLens' ``u.item`` (``id|title|date|...``, latin-1),
described by a :class:`CatalogFormat` (the ``data.source.catalog`` node). Titles are
cleaned for prompts (:func:`clean_name`) and made unique (:func:`unique_names`).
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from recpo.data.records import ItemCatalog
from recpo.errors import DataError

log = logging.getLogger(__name__)


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


def unique_names(names: dict[int, str]) -> dict[int, str]:
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
    *,
    path: str | Path,
    padding_id: int | None = None,
    fmt: CatalogFormat | None = None,
    clean: dict | None = None,
) -> ItemCatalog:
    """Read an item catalog: ``id2name.txt`` (``id::name`` lines, the default) or a
    delimited file like ``u.item`` described by ``fmt``.

    Args:
        path: The catalog file.
        padding_id: The id that pads histories in the tables; defaults to the item
            count and must not be an item id itself.
        fmt: How to read the file (default: ``id2name`` lines).
        clean: Title cleaning (arguments of :func:`clean_name`).
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
    return ItemCatalog(unique_names(names), padding)
