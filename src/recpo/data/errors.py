"""Errors raised for bad input data.

Every message names the file, the row and column (when there is one) and what was
expected, so a user can fix the data without reading a stack trace.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing input data.

    Args:
        message: What was wrong and what was expected.
        path: The file the problem was found in.
        row: The 0-based row of that file, when the problem is row-specific.
        column: The column of that row, when the problem is in one cell.
    """

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
