"""Load a dataset described by a data config (the ``data.source`` node)."""

from __future__ import annotations

import os
from pathlib import Path

from recpo.data.errors import DataError
from recpo.data.readers import read_id2name, read_llara, read_raw, read_sdpo_json
from recpo.data.records import RecDataset
from recpo.data.synthetic import SyntheticConfig, write_synthetic


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``paths.data_dir`` if set, else ``RECPO_DATA_DIR``; a clear error when neither is."""
    value = data_dir or os.environ.get("RECPO_DATA_DIR")
    if not value:
        raise DataError(
            "no data folder given: set paths.data_dir=/path/to/data on the command line "
            "or the RECPO_DATA_DIR environment variable"
        )
    return Path(value).expanduser()


def load_source(
    format: str,
    name: str,
    data_dir: str | Path | None = None,
    folder: str | None = None,
    cache_dir: str | Path | None = None,
    padding_id: int | None = None,
    files: dict | None = None,
    allow_pickle: bool = False,
    min_history: int = 3,
    max_history: int = 10,
    split_seed: int = 0,
    clean: dict | None = None,
    synthetic: dict | None = None,
) -> RecDataset:
    """Read the dataset in one of the formats ``llara``, ``sdpo_json``, ``raw`` or ``synthetic``.

    Args:
        format: Which reader to use.
        name: Dataset name (used in logs and run folders).
        data_dir: Root data folder (``paths.data_dir``); ``folder`` is relative to it.
        folder: The dataset's folder under ``data_dir`` (or an absolute path).
        cache_dir: Where generated data goes (synthetic).
        files: Per-split file stems (LLaRA) or paths (S-DPO JSON) overriding the defaults.
    """
    clean = dict(clean or {})
    if min_history < 1:
        raise DataError(f"data.source.min_history must be at least 1, got {min_history}")
    if format == "synthetic":
        if cache_dir is None:
            raise DataError("the synthetic dataset needs paths.cache_dir")
        directory = write_synthetic(SyntheticConfig(**(synthetic or {})), cache_dir)
        return read_raw(directory, name, max_history, min_history, split_seed, clean=clean)
    directory = (
        Path(folder)
        if folder and Path(folder).is_absolute()
        else resolve_data_dir(data_dir) / (folder or name)
    )
    if format == "llara":
        return read_llara(directory, name, padding_id, files, allow_pickle, min_history, clean)
    if format == "raw":
        return read_raw(directory, name, max_history, min_history, split_seed, clean=clean)
    if format == "sdpo_json":
        stems = {
            "train": f"{name}-train.json",
            "val": f"{name}-val.json",
            "test": f"{name}-test.json",
        }
        stems.update(files or {})
        catalog = None
        if (directory / "id2name.txt").is_file():
            catalog = read_id2name(directory / "id2name.txt", padding_id, **clean)
        return read_sdpo_json({s: directory / f for s, f in stems.items()}, name, catalog, clean)
    raise DataError(
        f"unknown data.source.format {format!r}; expected llara, sdpo_json, raw or synthetic"
    )
