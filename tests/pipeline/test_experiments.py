"""Every LLM experiment config composes and runs end to end with fast_dev_run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from recpo.experiment_configs import experiment_nodes
from recpo.train import train
from tests.conftest import CONF, compose, shared_data_dir

# Files starting with "_" are parts that experiments include, not experiments.
LLM_EXPERIMENTS = sorted(
    [
        *(
            p.stem
            for p in (CONF / "experiment").glob("[!_]*.yaml")
            if "/task: baseline" not in p.read_text()
        ),
        # the composed <dataset>_<objective> and <dataset>_po names
        *(name for name, node in experiment_nodes().items() if "baseline" not in str(node)),
    ]
)
DATASETS = ("lastfm", "steam", "goodreads")
SMALL_SYNTHETIC = "data.source.synthetic.num_users=40"
# Experiments that name a pretrained backbone run here on the tiny one (the pretrained
# weights are tested in tests/models/test_smollm2*.py).
PRETRAINED = {"lastfm_smollm2_study", "smollm2_study"}


def _shrink(cfg) -> None:
    with open_dict(cfg):
        for stage in ("sft", "po"):
            cfg[stage].max_train_examples = 32
            cfg[stage].batch_size = 4


def _check_outputs(cfg, metrics: dict, rows: int) -> None:
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "results.json").read_text()) == pytest.approx(metrics)
    for split in cfg.eval.splits:
        assert metrics[f"{split}/rows"] == rows
        for key in ("hr@1", "hr@5", "ndcg@5", "gen_hr@1", "valid_ratio"):
            assert 0.0 <= metrics[f"{split}/{key}"] <= 1.0
    for stage in cfg.stages:
        assert (out / "eval" / stage / "test_predictions.jsonl").is_file()
        assert f"{stage}:test/hr@1" in metrics


@pytest.mark.parametrize("experiment", LLM_EXPERIMENTS)
def test_experiment_composes_and_runs(experiment, tmp_path):
    """Each experiment's stages and objective run (fast_dev_run) on the synthetic data;
    its own dataset is exercised by the *_sft runs below."""
    cfg = compose(
        [
            f"+experiment={experiment}",
            "data=synthetic",
            SMALL_SYNTHETIC,
            *(["backbone=tiny"] if experiment in PRETRAINED else []),
            "trainer.fast_dev_run=true",
            "eval.max_examples=4",
            "eval.max_new_tokens=3",
        ],
        tmp_path,
    )
    assert cfg.task_name == experiment
    _shrink(cfg)
    _check_outputs(cfg, train(cfg), rows=4)


@pytest.mark.parametrize("dataset", DATASETS)
def test_dataset_sft_fast_dev_run(dataset, tmp_path):
    root = shared_data_dir()
    if root is None or not (root / dataset).is_dir():
        pytest.skip(f"{dataset} data not found under RECPO_DATA_DIR / ../shared/data")
    cfg = compose(
        [
            f"+experiment={dataset}_sft",
            f"paths.data_dir={root}",
            "trainer.fast_dev_run=true",
            "eval.max_examples=6",
        ],
        tmp_path,
    )
    _shrink(cfg)
    _check_outputs(cfg, train(cfg), rows=6)


def test_wandb_logger_offline(tmp_path, monkeypatch):
    """logger=wandb runs offline by default and writes a local run to sync later."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose(
        [
            "+experiment=demo",
            "logger=wandb",
            SMALL_SYNTHETIC,
            "trainer.fast_dev_run=true",
            "eval.max_examples=4",
            "eval.max_new_tokens=3",
            "stages=[sft]",
            "sft.reuse=false",  # train here even when another test stored this SFT result
        ],
        tmp_path,
    )
    assert cfg.logger.wandb.offline is True
    _shrink(cfg)
    train(cfg)
    runs = list(Path(cfg.paths.output_dir).rglob("offline-run-*"))
    assert runs, "no offline W&B run written"
