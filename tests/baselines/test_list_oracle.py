"""The list oracle reads the target off a published candidate list, and off no other list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from recpo.baselines.list_oracle import list_oracle_scores, reproducing_candidates
from recpo.data.candidates import sample_candidates
from recpo.data.records import Example, ItemCatalog
from recpo.errors import DataError
from recpo.train import train

CONF = Path(__file__).resolve().parents[2] / "conf"


def small_catalog(n: int = 40) -> ItemCatalog:
    return ItemCatalog({100 + i: f"item {i}" for i in range(n)}, padding_id=0)


def test_reproduces_the_list_only_for_its_target():
    """A list built by the published procedure for target 117 and history (101, 102, 103)
    is rebuilt with candidate c as the target for each of its 20 candidates: only c = 117
    gives the same ids in the same order."""
    catalog = small_catalog()
    items = catalog.item_ids
    position = {item: i for i, item in enumerate(items)}
    history = (101, 102, 103)
    cands = sample_candidates(history, 117, items, position, 20, seed=None)
    flags = reproducing_candidates(Example(history, 117, cands, 0), items, position)
    assert flags == [c == 117 for c in cands]
    # The same ids in another order are not the published list of any candidate.
    shuffled = cands[1:] + cands[:1]
    assert not any(reproducing_candidates(Example(history, 117, shuffled, 0), items, position))


def test_scores_are_one_at_the_reproducing_candidate():
    catalog = small_catalog()
    items = catalog.item_ids
    position = {item: i for i, item in enumerate(items)}
    rows = [
        Example((101, 102, 103), t, sample_candidates((101, 102, 103), t, items, position), i)
        for i, t in enumerate((110, 125, 139))
    ]
    scores = list_oracle_scores(rows, catalog)
    assert scores.shape == (3, 20)
    expected = torch.tensor([[float(c == ex.target) for c in ex.candidates] for ex in rows])
    assert torch.equal(scores.float(), expected)


def test_bad_input_is_a_clear_error():
    catalog = small_catalog()
    with pytest.raises(DataError, match="candidate list"):
        list_oracle_scores([Example((101, 102), 110, None, 7)], catalog)
    with pytest.raises(DataError, match="not in the item catalog"):
        list_oracle_scores([Example((101, 102), 110, (110, 999), 7)], catalog)


def make_cfg(tmp_path: Path, cache_dir: Path, protocol: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "+experiment=list_oracle",
                "data=synthetic",
                f"data.candidates={protocol}",
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={cache_dir}",
            ],
        )
    with open_dict(cfg):
        cfg.logger = {}
        cfg.callbacks = {}
    return cfg


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_published_lists_give_the_oracle_every_row(tmp_path: Path, cache_dir: Path):
    """On the generated data under ``published``, HR@1 = HR@5 = NDCG@5 = 1 on val and
    test, and on every row exactly one candidate (the target) reproduces the list."""
    cfg = make_cfg(tmp_path, cache_dir, "published")
    assert cfg.task_name == "synthetic_list_oracle"
    metrics = train(cfg)
    assert metrics == pytest.approx(
        {f"{s}/{m}": 1.0 for s in ("val", "test") for m in ("hr@1", "hr@5", "ndcg@5")}
    )
    summary = json.loads((tmp_path / "baseline_summary.json").read_text())
    assert summary["candidates"] == "published" and summary["test_rows"] > 0
    assert summary["unique_top"] == pytest.approx({"val": 1.0, "test": 1.0})
    assert summary["scored_rows"] == pytest.approx({"val": 1.0, "test": 1.0})


def test_independent_lists_give_the_oracle_nothing(tmp_path: Path, cache_dir: Path):
    """Under ``independent`` no candidate of any row reproduces the list: every score is
    0, the target ties with the 19 others, and a tie counts against the ranker (rank 19),
    so every metric is 0."""
    import hydra

    cfg = make_cfg(tmp_path, cache_dir, "independent")
    dm = hydra.utils.instantiate(cfg.data)
    dm.load()
    for split in ("val", "test"):
        assert list_oracle_scores(dm.examples(split), dm.catalog).sum().item() == 0.0
    metrics = train(cfg)
    assert metrics == pytest.approx(
        {f"{s}/{m}": 0.0 for s in ("val", "test") for m in ("hr@1", "hr@5", "ndcg@5")}
    )
    summary = json.loads((tmp_path / "baseline_summary.json").read_text())
    assert summary["candidates"] == "independent"
    assert summary["unique_top"] == pytest.approx({"val": 0.0, "test": 0.0})
    assert summary["scored_rows"] == pytest.approx({"val": 0.0, "test": 0.0})
