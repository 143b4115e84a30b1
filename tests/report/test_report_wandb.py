"""``recpo.report --wandb``: one offline W&B run (job type ``report``) in the jobs' group
holding every table and figure of the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recpo.report import collect
from recpo.report.__main__ import main
from recpo.report.wandb_run import report_group

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def wandb_records(path: Path):
    """The protobuf records of an offline ``run-*.wandb`` file (a LevelDB-style log:
    7-byte file header, then 32 KiB blocks of chunks with a 7-byte header each:
    checksum, little-endian length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += block - pos % block if pos % block else 0
            continue
        if kind in (1, 2):
            pending = chunk
        else:
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


@pytest.fixture
def offline(monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    if wandb.run is not None:  # a run an earlier test of this process left open
        wandb.run.finish()
    return wandb


def test_wandb_offline_report_run(small, tmp_path, offline, capsys):
    out = tmp_path / "out"
    assert main([str(small), "--out", str(out), "--wandb"]) == 0
    assert "W&B report run: " in capsys.readouterr().out
    (run,) = list((out / "wandb").glob("offline-run-*"))
    media = run / "files" / "media"
    (table,) = list((media / "table" / "tables").glob("table2_*.table.json"))
    content = json.loads(table.read_text())
    columns = content["columns"]
    rows = {(r[columns.index("method")], r[columns.index("K")]): r for r in content["data"]}
    # DMPO K=3: seeds 0, 1 give .50, .60 (tests/report/conftest.py).
    dmpo3 = rows["DMPO", "3"]
    assert dmpo3[columns.index("lastfm/test/gen_hr@1/mean")] == pytest.approx(0.55)
    assert dmpo3[columns.index("lastfm/test/gen_hr@1/n")] == 2
    assert list((media / "table" / "tables").glob("runs_*.table.json"))
    images = list((media / "images" / "figures").glob("collapse_curve_*.png"))
    assert len(images) == 2  # the curve and its paired version
    assert all(image.read_bytes()[:8] == PNG_MAGIC for image in images)

    (log,) = list(run.glob("run-*.wandb"))
    records = list(wandb_records(log))
    kinds = [r.WhichOneof("record_type") for r in records]
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(runs) == 1, kinds
    meta = runs[0]
    assert meta.job_type == "report"
    assert meta.run_group == "negatives/lastfm-tiny"
    logged = {
        item.key or item.nested_key[0]
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
    }
    assert {"tables/table2", "tables/runs", "figures/collapse_curve"} <= logged
    assert "figures/collapse_curve_paired" in logged


def test_report_run_is_its_own_when_another_run_is_open(small, tmp_path, offline):
    """A run already open in the process (training code, a notebook) is neither reused
    nor finished by the report."""
    other = offline.init(project="other", dir=str(tmp_path), mode="offline")
    out = tmp_path / "out"
    assert main([str(small), "--out", str(out), "--wandb"]) == 0
    assert offline.run is other  # still open
    other.finish()
    offline.teardown()
    (report_run,) = list((out / "wandb").glob("offline-run-*"))
    assert list((report_run / "files" / "media" / "table").rglob("table2_*.table.json"))
    (other_run,) = list((tmp_path / "wandb").glob("offline-run-*"))
    assert not (other_run / "files" / "media").exists()
    (log,) = list(other_run.glob("run-*.wandb"))
    names = {r.run.project for r in wandb_records(log) if r.WhichOneof("record_type") == "run"}
    assert names == {"other"}


def test_group_is_the_jobs_wandb_group(small):
    """Jobs whose config names a W&B group (resolved, here through ${task_name}) put the
    report run in that group; without one, the sweep folder below multirun/ names it."""
    assert report_group(collect(small)) == "negatives/lastfm-tiny"
    for config in small.rglob("config.yaml"):
        cfg = yaml.safe_load(config.read_text())
        cfg["logger"] = {"wandb": {"group": "${task_name}", "project": "recpo"}}
        config.write_text(yaml.safe_dump(cfg))
    assert report_group(collect(small)) == "hand"


def test_wandb_disabled_writes_nothing(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main([str(small), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    assert "W&B report run: not written (WANDB_MODE=disabled)" in capsys.readouterr().out
    assert not (tmp_path / "out" / "wandb").exists()
