"""Save a trained sequential recommender for later models (a LLaRA-style hybrid).

``save_encoder(model, item_ids, directory, info)`` writes three files:

* ``item_embeddings.safetensors``: ``item_embeddings`` ``(N, D)`` float32, the input
  item embeddings (padding row dropped), and ``item_ids`` ``(N,)`` int64: row ``i``
  is the item with catalog id ``item_ids[i]``. When the model scores items with a
  separate output table, ``output_embeddings`` ``(N, D)`` and ``output_bias``
  ``(N,)`` are included too.
* ``encoder.safetensors``: the full ``state_dict`` of the model, to compute user
  representations of histories (what LLaRA calls the sequence embedding).
* ``encoder.json``: ``{"target": class path, "config": constructor kwargs,
  "dim", "num_items", "padding_index", "max_len", "input": how to feed it, ...info}``.

``load_encoder(directory)`` rebuilds the model (in eval mode) and returns it with the
item-id order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from safetensors.torch import load_file, save_file

from recpo.baselines.models import SequentialRecommender

INPUT_CONVENTION = (
    "history: (B, L) long item indices (row i of item_embeddings), oldest first, "
    "right-padded (pad value ignored, use padding_index); lengths: (B,) real lengths >= 1; "
    "model(history, lengths) -> (B, D) user representation; model.score_all(h) -> (B, N)"
)


def save_encoder(
    model: SequentialRecommender,
    item_ids: list[int],
    directory: str | Path,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the model's item embeddings, weights and config under ``directory``.

    Args:
        model: A trained recommender.
        item_ids: Catalog item id of each item index (length ``N``).
        directory: Created if missing.
        info: Extra JSON-serialisable fields for ``encoder.json`` (dataset, metrics, ...).

    Returns:
        The directory.
    """
    if len(item_ids) != model.num_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {model.num_items} items")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = model.item_embeddings.weight.detach().cpu()
    tables = {
        "item_embeddings": weights[: model.num_items].contiguous().float(),
        "item_ids": torch.tensor(item_ids, dtype=torch.long),
    }
    if not model.tie_weights:
        table, bias = model.output_table()
        tables["output_embeddings"] = table.detach().cpu().contiguous().float()
        tables["output_bias"] = bias.detach().cpu().contiguous().float()
    save_file(tables, directory / "item_embeddings.safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / "encoder.safetensors")
    cls = type(model)
    meta = {
        "target": f"{cls.__module__}.{cls.__qualname__}",
        "config": model.config,
        "num_items": model.num_items,
        "dim": model.dim,
        "max_len": model.max_len,
        "padding_index": model.padding_index,
        "tie_weights": model.tie_weights,
        "input": INPUT_CONVENTION,
        **(info or {}),
    }
    (directory / "encoder.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def load_encoder(directory: str | Path) -> tuple[SequentialRecommender, list[int]]:
    """Rebuild a model written by :func:`save_encoder`.

    Returns:
        The model in eval mode and the catalog item id of each item index.
    """
    directory = Path(directory)
    meta = json.loads((directory / "encoder.json").read_text())
    model = get_class(meta["target"])(**meta["config"])
    model.load_state_dict(load_file(directory / "encoder.safetensors"))
    item_ids = load_file(directory / "item_embeddings.safetensors")["item_ids"].tolist()
    return model.eval(), item_ids
