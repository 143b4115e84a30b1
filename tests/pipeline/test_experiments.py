"""Every LLM experiment config composes and runs end to end with fast_dev_run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict
from tests.conftest import CONF, compose, shared_data_dir

from recpo.train import train

LLM_EXPERIMENTS = sorted(
    p.stem
    for p in (CONF / "experiment").glob("*.yaml")
    if "task: baseline" not in p.read_text() and "/task: baseline" not in p.read_text()
)
NEEDS_DATA = {"lastfm", "steam", "goodreads"}


def _dataset_of(name: str) -> str | None:
    prefix = name.split("_")[0]
    return prefix if prefix in NEEDS_DATA else None


@pytest.mark.parametrize("experiment", LLM_EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, tmp_path):
    overrides = [f"+experiment={experiment}", "trainer.fast_dev_run=true", "eval.max_examples=6"]
    dataset = _dataset_of(experiment)
    if dataset:
        root = shared_data_dir()
        if root is None or not (root / dataset).is_dir():
            pytest.skip(f"{dataset} data not found under RECPO_DATA_DIR / ../shared/data")
        overrides.append(f"paths.data_dir={root}")
    cfg = compose(overrides, tmp_path)
    with open_dict(cfg):
        cfg.data.max_train_examples = 64
        cfg.data.batch_size = 4
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "results.json").read_text())
    assert saved == pytest.approx(metrics)
    for split in ("val", "test"):
        assert metrics[f"{split}/rows"] == 6
        for key in ("hr@1", "hr@5", "ndcg@5", "gen_hr@1", "valid_ratio"):
            assert 0.0 <= metrics[f"{split}/{key}"] <= 1.0
    assert (out / "sft_model" / "config.json").is_file()
    assert (out / "eval" / "sft" / "test_predictions.jsonl").is_file()
