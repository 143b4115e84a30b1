"""Evaluation shared across ranks: 2 CPU processes (gloo) evaluate every other batch,
rank 0 gathers them; metrics and predictions equal one process's, and each rank's
progress file lets a stopped evaluation resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recpo.evaluation import evaluate
from recpo.evaluation.evaluate import evaluate_model, shard_batches
from recpo.models.backbone import load_backbone
from recpo.pipeline import build_datamodule
from tests.conftest import compose
from tests.pipeline.test_sweeps import SMALL

# 16 rows in batches of 3: six batches, the last one short, three per rank.
OVERRIDES = [*SMALL, "eval.max_examples=16", "runtime.eval_batch_size=3", "eval.max_new_tokens=4"]


def _model_and_data(tmp: Path):
    cfg = compose(OVERRIDES, tmp)
    dm = build_datamodule(cfg)
    ds = dm.load()
    base = load_backbone(
        cfg.backbone,
        model_dir=None,
        cache_dir=cfg.paths.cache_dir,
        titles=list(ds.catalog.names.values()),
        texts=dm.tokenizer_texts(),
    )
    dm.set_tokenizer(base.tokenizer)
    return cfg, dm, base


def _rank(rank: int, world: int, tmp: str, out: str, resume: bool) -> None:
    os.environ["RANK"] = str(rank)  # what recpo reads as "rank 0 writes"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/pg-{out}", rank=rank, world_size=world
    )
    try:
        cfg, dm, base = _model_and_data(Path(tmp))
        if resume:
            # First attempt stopped after its batches: the progress files stay.
            finish = evaluate._Progress.finish
            evaluate._Progress.finish = lambda self: None
            evaluate_model(cfg, base.model, base.tokenizer, dm, Path(tmp) / out)
            evaluate._Progress.finish = finish
            for split in ("val", "test"):
                assert (Path(tmp) / out / f"{split}_progress.rank{rank}of2.jsonl").is_file()

            def refuse(*args, **kwargs):
                raise AssertionError("a stored batch was computed again")

            evaluate.rank_batch = evaluate.generate_batch = refuse
        metrics = evaluate_model(cfg, base.model, base.tokenizer, dm, Path(tmp) / out)
        if rank == 0:
            (Path(tmp) / f"{out}.json").write_text(json.dumps(metrics))
        else:
            assert metrics == {}
    finally:
        dist.destroy_process_group()


def _predictions(folder: Path) -> dict[str, list[dict]]:
    return {
        p.name: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(folder.glob("*_predictions.jsonl"))
    }


@pytest.mark.parametrize("resume", [False, True], ids=["once", "resumed"])
def test_two_ranks_evaluate_like_one_process(tmp_path, resume):
    cfg, dm, base = _model_and_data(tmp_path)  # also builds the tiny backbone's cache
    single = evaluate_model(cfg, base.model, base.tokenizer, dm, tmp_path / "single")
    mp.spawn(_rank, args=(2, str(tmp_path), "sharded", resume), nprocs=2, join=True)
    sharded = json.loads((tmp_path / "sharded.json").read_text())
    assert single["val/rows"] == single["test/rows"] == 16
    assert sharded.keys() == single.keys()
    # The same batches added up in the same order: equal within float64 rounding.
    assert sharded == pytest.approx(single, rel=1e-12, abs=1e-12)
    assert _predictions(tmp_path / "sharded") == _predictions(tmp_path / "single")
    assert len(_predictions(tmp_path / "single")["test_predictions.jsonl"]) == 16
    assert not list((tmp_path / "sharded").glob("*progress*"))  # removed once done


def test_shards_cover_the_batches_of_one_process(tmp_path):
    cfg, dm, base = _model_and_data(tmp_path)
    loader = dm.eval_dataloader("val")
    whole = [list(b["rows"]) for b in loader]
    parts = [shard_batches(loader, rank, 4) for rank in range(4)]
    got = {i: list(b["rows"]) for indices, shard in parts for i, b in zip(indices, shard)}
    assert [got[i] for i in range(len(whole))] == whole
    assert [len(indices) for indices, _ in parts] == [2, 2, 1, 1]  # 6 batches over 4 ranks
