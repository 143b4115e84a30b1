"""Every baseline experiment config composes and runs end to end (``fast_dev_run``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from recpo.errors import DataError
from recpo.experiment_configs import register
from recpo.train import train

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
DATA_DIR = Path(os.environ.get("RECPO_DATA_DIR") or REPO.parent / "shared" / "data")
EXPERIMENTS = sorted(
    name for name in register() if name.split("_")[-1] in ("gru4rec", "caser", "sasrec")
)
assert len(EXPERIMENTS) == 9, EXPERIMENTS  # 3 datasets x 3 trained baselines


def make_cfg(
    experiment: str, tmp_path: Path, cache_dir: Path, overrides: list[str] = ()
) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"+experiment={experiment}",
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={cache_dir}",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.trainer.fast_dev_run = True
        cfg.trainer.enable_progress_bar = False
        cfg.callbacks = {}
        cfg.logger = {}
    return cfg


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    # One synthetic dataset for all runs: generating it is the slow part.
    return tmp_path_factory.mktemp("cache")


def test_all_nine_experiments_exist():
    assert EXPERIMENTS == sorted(
        f"{d}_{m}" for d in ("lastfm", "goodreads", "steam") for m in ("gru4rec", "caser", "sasrec")
    )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_on_synthetic(experiment: str, tmp_path: Path, cache_dir: Path):
    cfg = make_cfg(experiment, tmp_path, cache_dir, ["data=synthetic"])
    assert cfg.task_name == experiment
    metrics = train(cfg)
    assert set(metrics) == {f"{s}/{m}" for s in ("val", "test") for m in ("hr@1", "hr@5", "ndcg@5")}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert json.loads((tmp_path / "results.json").read_text()) == pytest.approx(metrics)
    summary = json.loads((tmp_path / "baseline_summary.json").read_text())
    assert summary["dataset"] == "synthetic" and summary["num_items"] == 400
    if experiment.startswith("steam"):
        assert summary["prefix_rows"] > 0  # the val users' histories were added
    assert (tmp_path / "encoder" / "item_embeddings.safetensors").is_file() == experiment.endswith(
        "sasrec"
    )


def test_goodreads_without_its_folder_fails_clearly(tmp_path: Path, cache_dir: Path):
    """Goodreads is not shipped: a data folder without it gives a DataError naming the folder."""
    cfg = make_cfg("goodreads_sasrec", tmp_path, cache_dir, [f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(DataError, match="goodreads"):
        train(cfg)


def test_no_data_dir_fails_clearly(tmp_path: Path, cache_dir: Path, monkeypatch):
    monkeypatch.delenv("RECPO_DATA_DIR", raising=False)
    cfg = make_cfg("lastfm_gru4rec", tmp_path, cache_dir, ["paths.data_dir=null"])
    with pytest.raises(DataError, match="paths.data_dir"):
        train(cfg)


@pytest.mark.skipif(
    not (DATA_DIR / "steam").is_dir(),
    reason=f"Steam data not found in {DATA_DIR} (set RECPO_DATA_DIR)",
)
def test_steam_trains_on_val_histories_only(tmp_path: Path, cache_dir: Path):
    """Steam: the train sample plus next-item steps inside val histories; no val/test target."""
    cfg = make_cfg("steam_gru4rec", tmp_path, cache_dir, [f"paths.data_dir={DATA_DIR}"])
    train(cfg)
    summary = json.loads((tmp_path / "baseline_summary.json").read_text())
    assert summary["train_rows"] == 1000
    assert summary["val_rows"] == 1184 and summary["test_rows"] == 1186
    # Every val row of n items gives n - 1 prefixes (rows with n >= 3 are kept).
    assert 1184 * 2 <= summary["prefix_rows"] <= 1184 * 9
