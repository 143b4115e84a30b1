"""Entry point: ``python -m recpo.train +experiment=NAME [overrides]``.

Seeds, builds the task named by ``task`` (the LLM pipeline or a baseline), runs
it, and writes ``results.json`` into the run folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from recpo.data.errors import DataError

log = logging.getLogger("recpo")
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def train(cfg: DictConfig) -> dict:
    """Run the configured task and return its metrics (also saved as ``results.json``)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=False)
    run = hydra.utils.instantiate(cfg.task)
    metrics = run(cfg)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tmp.replace(out / "results.json")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except DataError as err:
        # Bad input: one clear line, not a stack trace.
        log.error("data error: %s", err)
        raise SystemExit(2) from None
    return metrics.get("test/hr@1")


if __name__ == "__main__":
    main()
