"""Load a dataset described by a data config (the ``data.source`` node).

The node names its format's reader (``reader._target_``, one function of
:mod:`recpo.data.formats` or :func:`recpo.data.synthetic.read_synthetic`) and holds the
reader's arguments next to the keys every dataset has (:func:`load_source`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recpo.data.augment import augment_train_from_val_users
from recpo.data.records import SPLITS, RecDataset
from recpo.errors import DataError

log = logging.getLogger(__name__)

# Where a config names the reader. A reader is code, not a setting (``data.source.format``
# names the format): what compares settings leaves this key out (the SFT content key, the
# check that a run folder holds the same job), so jobs and SFT models from before the key
# existed keep matching and moving a reader to another module changes nothing.
READER_KEY = "data.source.reader"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``paths.data_dir`` if set, else ``RECPO_DATA_DIR``; a clear error when neither is."""
    value = data_dir or os.environ.get("RECPO_DATA_DIR")
    if not value:
        raise DataError(
            "no data folder given: set paths.data_dir=/path/to/data on the command line "
            "or the RECPO_DATA_DIR environment variable"
        )
    return Path(value).expanduser()


def dataset_directory(data_dir: str | Path | None, folder: str | None, name: str) -> Path:
    """The dataset's folder: ``folder`` when absolute, else ``data_dir/folder`` (``folder``
    defaults to the dataset's name)."""
    if folder and Path(folder).is_absolute():
        return Path(folder)
    return resolve_data_dir(data_dir) / (folder or name)


def _reader_name(reader: Callable) -> str:
    func = getattr(reader, "func", reader)  # a functools.partial (``_partial_: true``)
    return f"{func.__module__}.{func.__qualname__}"


def reader_arguments(
    reader: Callable, format: str | None, available: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of ``reader``: those of ``available`` (keys every dataset has)
    and ``options`` (the format's own keys) that it names. ``directory`` is resolved only
    for a reader that reads a folder. An option set but not read by the reader is a
    :class:`DataError` (a key of another format, or a typo)."""
    params = inspect.signature(reader).parameters
    unread = [k for k, v in options.items() if k not in params and v is not None]
    if unread:
        what = f"the {format} format's reader" if format else "the reader"
        raise DataError(
            f"data.source.{unread[0]}: not read by {what} {_reader_name(reader)} "
            f"(it reads {', '.join(params)})"
        )
    args = {k: v for k, v in {**available, **options}.items() if k in params}
    if "directory" in params:
        args["directory"] = dataset_directory(
            available.get("data_dir"), available.get("folder"), available["name"]
        )
    return args


def load_source(
    reader: Callable[..., RecDataset] | Mapping,
    name: str,
    *,
    format: str | None = None,
    data_dir: str | Path | None = None,
    folder: str | None = None,
    cache_dir: str | Path | None = None,
    min_history: int = 3,
    max_history: int = 10,
    split_seed: int = 0,
    augment_train_from_val: float = 0.0,
    **options: Any,
) -> RecDataset:
    """Read the dataset of a ``data.source`` node with its reader, then turn val users
    into training rows when ``augment_train_from_val`` is set.

    Args:
        reader: The format's reader, or its config node (``_target_``, ``_partial_``).
        name: Dataset name (used in logs and run folders).
        format: The format's name (``llara``, ``sdpo_json``, ``raw``, ``synthetic``):
            named in messages, and a key of the SFT content key where the reader's
            module path is not (see ``recpo.training.sft_cache.SFT_KEY_EXCLUDED``).
        data_dir: Root data folder (``paths.data_dir``); ``folder`` is relative to it.
        folder: The dataset's folder under ``data_dir`` (or an absolute path).
        cache_dir: Where generated data goes (synthetic).
        min_history, max_history: Rows with fewer history items are dropped; longer
            histories keep their last ``max_history`` items (the readers that build
            histories, and the rows from val users).
        split_seed: Seed of the user split (raw, synthetic) and of the val users moved.
        augment_train_from_val: Share of the val users whose sequences become training
            rows (:func:`~recpo.data.augment.augment_train_from_val_users`); 0 keeps the
            splits as they are.
        options: The format's own keys, each an argument of ``reader`` (e.g. LLaRA's
            ``padding_id``, ``files``, ``allow_pickle``, ``catalog``; ``clean``).
    """
    if min_history < 1:
        raise DataError(f"data.source.min_history must be at least 1, got {min_history}")
    if isinstance(reader, Mapping):
        import hydra

        reader = hydra.utils.instantiate(reader)
    available = dict(
        name=name,
        data_dir=data_dir,
        folder=folder,
        cache_dir=cache_dir,
        min_history=min_history,
        max_history=max_history,
        split_seed=split_seed,
    )
    ds = reader(**reader_arguments(reader, format, available, options))
    if not ds.origins:
        ds.origins = {s: {s: len(ds.split(s))} for s in SPLITS}
    if augment_train_from_val:
        ds = augment_train_from_val_users(
            ds, augment_train_from_val, split_seed, min_history, max_history
        )
    log.info("data used: %s", ds.describe_origins())
    return ds
