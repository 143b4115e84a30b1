"""The whole pipeline under DDP on 2 CPU ranks: each rank evaluates its share of the
rows, and the metrics and predictions are those of one process evaluating the same
saved models."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_train
from tests.distributed.runs import DDP, PIPELINE, predictions, reevaluate_in_one_process


def test_ddp_pipeline_evaluation_equals_one_process(tmp_path):
    run = tmp_path / "ddp"
    proc = run_train(
        [
            *PIPELINE,
            *DDP,
            f"hydra.run.dir={run}",
            f"paths.sft_dir={tmp_path}/sft",
            f"paths.cache_dir={tmp_path}/cache",
        ],
        timeout=600,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "MEMBER: 2/2" in log
    # Both stages' evaluations were shared: 6 batches of 3 rows per split, 3 per rank.
    for rank in (0, 1):
        assert log.count(f"on rank {rank} of 2: 3 of 6 batches") == 4  # (sft, po) x (val, test)
    results = json.loads((run / "results.json").read_text())
    single = reevaluate_in_one_process(run, tmp_path / "single")
    for stage in ("sft", "po"):
        got = {k.split(":", 1)[1]: v for k, v in results.items() if k.startswith(f"{stage}:")}
        assert got["test/rows"] == got["val/rows"] == 16
        assert got == pytest.approx(single[stage], rel=1e-12, abs=1e-12), stage
        assert predictions(run / "eval" / stage) == predictions(tmp_path / "single" / stage)
    assert not list(run.rglob("*progress*"))
