"""Where SFT results are stored: a content key of everything that decides what SFT
learns, so a sweep over preference-optimization settings trains SFT once and every
later run (and every later job of the sweep) reuses it.

``<paths.sft_dir>/<dataset>-<backbone>-<key>/`` holds the model (LoRA: the adapter),
``sft_key.json`` (what the key was computed from, to tell why a later run did not
reuse it) and one ``eval-<key>/`` folder per evaluation of it (:func:`sft_eval_key`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recpo.data.datamodule import RecDataModule
from recpo.models.tiny import content_key

# The nodes that decide what SFT learns; the SFT key hashes each of them whole ...
SFT_KEY_NODES = ("data", "backbone", "sft", "trainer", "seed", "scoring")
# ... except these keys, which change where files are read from or whether a stored
# result is reused, never the weights. The rows read from the files are hashed
# instead (RecDataModule.rows_key), so the same data in another folder gives the
# same key and other data in the same folder does not.
SFT_KEY_EXCLUDED = ("data.source.data_dir", "data.source.cache_dir", "sft.reuse")
# Everything else is not part of the SFT key: paths, runtime (threads, workers, eval
# batch size, logging cadence), logger, callbacks, eval, po, objective, stages.


def _hashed(cfg: DictConfig, name: str, excluded: tuple[str, ...] = SFT_KEY_EXCLUDED) -> Any:
    """``cfg[name]`` resolved, without the keys of ``excluded`` that lie inside it."""
    node = OmegaConf.select(cfg, name, throw_on_missing=True)
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    for key in excluded:
        head, _, rest = key.partition(".")
        if head != name:
            continue
        parent = value
        *path, leaf = rest.split(".")
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(leaf, None)
    return value


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
