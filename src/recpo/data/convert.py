"""Convert LLaRA pandas pickles (``*.df``) to parquet, the format the readers load by default.

Loading a pickle runs code, so only convert files you trust::

    python -m recpo.data.convert path/to/lastfm [--out path/to/lastfm_parquet]

Without ``--out`` the parquet files are written beside the pickles. An existing
parquet file is never overwritten.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recpo.errors import DataError

CATALOG_FILES = ("id2name.txt", "u.item")


def _plain(value):
    """A cell as plain Python values: tuples and arrays become lists, numpy scalars
    Python numbers (nested values are kept, e.g. ``(item, rating)`` pairs)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def convert_folder(src: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write ``NAME.parquet`` for every ``NAME.df`` in ``src``; copy the item catalog
    (``id2name.txt``, MovieLens' ``u.item``).

    Returns:
        The parquet files written.
    """
    src = Path(src)
    out = src if out is None else Path(out)
    pickles = sorted(src.glob("*.df"))
    if not pickles:
        raise DataError("no .df files to convert", src)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pkl in pickles:
        target = out / f"{pkl.stem}.parquet"
        if target.exists():
            print(f"skip {target} (exists)")
            continue
        df = pd.read_pickle(pkl)
        df = df.reset_index(drop=True)
        for column in ("seq", "next"):
            if column in df.columns and df[column].dtype == object:
                # Tuples ((item, rating) pairs) and arrays become lists, which parquet stores.
                df[column] = df[column].map(_plain)
        tmp = target.with_suffix(".parquet.tmp")
        try:
            df.to_parquet(tmp, index=False)
        except Exception as err:  # noqa: BLE001 - report any writer failure against the file
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot write parquet: {err}", pkl) from None
        tmp.replace(target)  # atomic: a reader never sees a half-written file
        written.append(target)
        print(f"wrote {target} ({len(df)} rows)")
    for catalog in CATALOG_FILES:
        if (src / catalog).is_file() and out != src and not (out / catalog).exists():
            shutil.copyfile(src / catalog, out / catalog)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="folder with LLaRA .df pickles")
    parser.add_argument("--out", default=None, help="output folder (default: beside the pickles)")
    args = parser.parse_args(argv)
    try:
        convert_folder(args.src, args.out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
