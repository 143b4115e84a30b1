"""The errors the project reports as one line instead of a stack trace.

Each kind of bad input has its class here, under one base, :class:`RecpoError`, so an
entry point catches them all at once and prints ``<kind>: <message>`` (``python -m
recpo.train`` then exits with code 2). Kept apart from :mod:`recpo.train`, which runs
as ``__main__``: a class defined there and imported elsewhere would be a second,
different class.
"""

from __future__ import annotations

from pathlib import Path


class RecpoError(Exception):
    """Bad input that the user can fix: the message says what was wrong and what was
    expected. ``kind`` names the family in the one-line report."""

    kind = "error"


class ConfigError(RecpoError, ValueError):
    """A setting that cannot work with the rest of the config."""

    kind = "config error"


class DataError(RecpoError, ValueError):
    """Bad or missing input data.

    Every message names the file, the row and column (when there is one) and what was
    expected, so a user can fix the data without reading a stack trace.

    Args:
        message: What was wrong and what was expected.
        path: The file the problem was found in.
        row: The 0-based row of that file, when the problem is row-specific.
        column: The column of that row, when the problem is in one cell.
    """

    kind = "data error"

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ):
        self.path = None if path is None else Path(path)
        self.row = row
        self.column = column
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class BackboneError(RecpoError, RuntimeError):
    """A backbone cannot be loaded (missing folder, missing optional package): the
    message says what to do."""

    kind = "backbone error"


class ReportError(RecpoError):
    """Bad input for the report: one line naming the file or setting and what was expected."""

    kind = "report error"


class SFTLockTimeout(RecpoError, TimeoutError):
    """Another job held the lock of an SFT key (``recpo.training.sft_cache.sft_key_lock``)
    for longer than ``runtime.sft_lock_timeout``: the message names the holder."""

    kind = "lock timeout"


class DashboardError(RecpoError):
    """Bad input for ``python -m recpo.dashboard``: one line naming what is missing."""

    kind = "dashboard error"
