"""What the table readers share: finding a table in a safe format, reading it with its
columns checked, and describing a bad cell in an error message."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recpo.errors import DataError

SAFE_SUFFIXES = (".parquet", ".jsonl")


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


def find_any(directory: Path, stem: str) -> Path:
    """Locate ``stem`` as CSV, parquet or JSONL."""
    for suffix in (".csv", *SAFE_SUFFIXES):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    raise DataError(
        f"file not found; expected {stem}.csv, {stem}.parquet or {stem}.jsonl", directory / stem
    )


def read_table(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    """Read a parquet / JSONL / CSV / pickle table and check its columns."""
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


def describe_value(value: Any) -> str:
    """A cell's value for an error message: its type and a short ``repr``."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return f"a missing value ({value!r})"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
