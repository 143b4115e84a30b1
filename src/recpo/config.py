"""The training config (``conf/train.yaml``) composed outside a Hydra run, and a helper
to leave keys out of a config.

``python -m recpo.train`` composes the config through ``@hydra.main``; scripts and
tools that read the same config (``recpo.data.shortcut``, ``recpo.baselines.reference``,
the benchmarks) call :func:`compose` with the same overrides, so what they measure is
what a run reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from recpo.experiment_configs import CONF, register_once

# The config folder of the repository (``conf/``): train.yaml and its groups.
CONFIG_DIR = CONF  # the repository's conf/ folder
CONFIG_NAME = "train"


def compose(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` (the command line of a run).

    Args:
        overrides: Hydra overrides, e.g. ``["+experiment=demo", "data=lastfm"]``.
        output_dir: ``paths.output_dir``, which is Hydra's run folder in a run and cannot
            be resolved outside one; ``None`` leaves it unresolved.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_once()  # the composed <dataset>_<method> experiments
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def drop_keys(value: dict, keys: Iterable[str]) -> dict:
    """``value`` (a config as nested dicts, changed in place) without the dotted ``keys``
    (``data.source.reader``); keys it does not hold are skipped."""
    for key in keys:
        parent: Any = value
        *path, leaf = key.split(".")
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(leaf, None)
    return value
