"""Where SFT results are stored: a content key of everything that decides what SFT
learns, so a sweep over preference-optimization settings trains SFT once and every
later run (and every later job of the sweep) reuses it.

``<paths.sft_dir>/<dataset>-<backbone>-<key>/`` holds the model (LoRA: the adapter),
``sft_key.json`` (what the key was computed from, to tell why a later run did not
reuse it) and one ``eval-<key>/`` folder per evaluation of it (:func:`sft_eval_key`).
Jobs started together with the same key take turns through ``<folder>.lock``
(:func:`sft_key_lock`): one trains and evaluates, the others then reuse.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recpo.config import drop_keys
from recpo.data.datamodule import RecDataModule
from recpo.data.sources import READER_KEY
from recpo.errors import SFTLockTimeout
from recpo.models.tiny import content_key

log = logging.getLogger(__name__)

# The nodes that decide what SFT learns; the SFT key hashes each of them whole ...
SFT_KEY_NODES = ("data", "backbone", "sft", "trainer", "seed", "scoring")
# ... except these keys, which change where files are read from, which function reads
# them or whether a stored result is reused, never the weights. The rows read from the
# files are hashed instead (RecDataModule.rows_key), so the same data in another folder
# gives the same key and other data in the same folder does not. The reader (READER_KEY)
# is code named by its module path; the format's name, data.source.format, is hashed.
SFT_KEY_EXCLUDED = ("data.source.data_dir", "data.source.cache_dir", READER_KEY, "sft.reuse")
# Everything else is not part of the SFT key: paths, runtime (threads, workers, eval
# batch size, logging cadence), logger, callbacks, eval, po, objective, stages.


def _hashed(cfg: DictConfig, name: str, excluded: tuple[str, ...] = SFT_KEY_EXCLUDED) -> Any:
    """``cfg[name]`` resolved, without the keys of ``excluded`` that lie inside it."""
    node = OmegaConf.select(cfg, name, throw_on_missing=True)
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    inside = [k.partition(".")[2] for k in excluded if k.partition(".")[0] == name]
    return drop_keys(value, inside) if isinstance(value, dict) else value


def effective_batch_size(cfg: DictConfig, stage: str) -> int | str:
    """Rows per optimizer step: nodes x devices x batch size x accumulation
    (a description when the device count is not a number, e.g. ``auto``)."""
    t = cfg.trainer
    parts = [t.get("num_nodes", 1), t.devices, cfg[stage].batch_size, t.accumulate_grad_batches]
    if all(isinstance(p, int) and p > 0 for p in parts):
        return parts[0] * parts[1] * parts[2] * parts[3]
    return "x".join(str(p) for p in parts)


def sft_key_parts(cfg: DictConfig, rows: str) -> dict[str, Any]:
    """What the SFT key hashes: the nodes of :data:`SFT_KEY_NODES` (less
    :data:`SFT_KEY_EXCLUDED`), the effective batch size and ``rows``, the content
    key of the training and validation rows the SFT stage uses."""
    parts = {name: _hashed(cfg, name) for name in SFT_KEY_NODES}
    parts["effective_batch_size"] = effective_batch_size(cfg, "sft")
    parts["rows"] = rows
    return parts


def sft_key(cfg: DictConfig, rows: str) -> str:
    """Content key of an SFT result (see :func:`sft_key_parts`)."""
    return content_key(sft_key_parts(cfg, rows))


def sft_eval_key(cfg: DictConfig, rows: str) -> str:
    """Content key of a stored SFT evaluation: the data, the evaluation settings, the
    scoring and ``rows``, the content key of the evaluated rows (inside the SFT
    folder, so the model is fixed too)."""
    return content_key(
        {
            "data": _hashed(cfg, "data"),
            "eval": _hashed(cfg, "eval"),
            "scoring": cfg.scoring,
            "rows": rows,
        }
    )


def sft_folder(cfg: DictConfig, dm: RecDataModule) -> Path:
    """Where the SFT result of ``cfg`` is stored; ``dm`` is the SFT stage's data."""
    backbone = cfg.backbone.get("name") or f"tiny-{cfg.backbone.tokenizer}"
    key = sft_key(cfg, dm.rows_key(("train", "val")))
    return Path(cfg.paths.sft_dir) / f"{cfg.data.source.name}-{backbone}-{key}"


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON through a temporary file (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def _owner_file(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock.owner")


@contextmanager
def sft_key_lock(folder: Path, timeout: float | None, run_dir: str = "?") -> Iterator[None]:
    """Hold the lock of the SFT result stored in ``folder`` (``<folder>.lock``), so that
    of several jobs started together with the same SFT key one trains and evaluates it
    and the others wait, then reuse it.

    The lock is the operating system's (``flock``): it goes when its holder's process
    ends, killed or not. ``<folder>.lock.owner`` says who holds it (host, pid, run
    folder), for the message when ``timeout`` seconds pass (``None``: wait without limit).
    """
    from filelock import FileLock, Timeout

    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(folder.name + ".lock")
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _owner_file(folder)
        holder = owner.read_text().strip() if owner.is_file() else "unknown"
        log.info("SFT key %s is being trained by another job (%s); waiting", folder.name, holder)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            holder = owner.read_text().strip() if owner.is_file() else "unknown"
            raise SFTLockTimeout(
                f"waited {timeout:.0f} s for {path}, held by {holder}. If that job still "
                f"trains this SFT model, wait longer (runtime.sft_lock_timeout=null waits "
                f"without limit); if it no longer runs (a lock left behind on a file system "
                f"without flock), delete {path} and run again"
            ) from None
    try:
        _owner_file(folder).write_text(
            f"host {socket.gethostname()}, pid {os.getpid()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}, run {run_dir}\n"
        )
        yield
    finally:
        _owner_file(folder).unlink(missing_ok=True)
        lock.release()
