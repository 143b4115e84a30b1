"""One error family (recpo.errors): python -m recpo.train reports each kind as one
``<kind>: <message>`` line with exit code 2, never a stack trace."""

from __future__ import annotations

import sys

import pytest

import recpo.train
from recpo.errors import (
    BackboneError,
    ConfigError,
    DashboardError,
    DataError,
    RecpoError,
    ReportError,
    SFTLockTimeout,
)


@pytest.mark.parametrize(
    "error,kind",
    [
        (ConfigError("po.lr=-1: expected a value > 0"), "config error"),
        (DataError("missing column(s) ['next']", "train_data.parquet", 3), "data error"),
        (BackboneError("set RECPO_MODEL_DIR"), "backbone error"),
        (ReportError("no finished job"), "report error"),
        (SFTLockTimeout("waited 5 s for x.lock, held by host h, pid 1"), "lock timeout"),
        (DashboardError("no preference runs (job type po) in d"), "dashboard error"),
    ],
)
def test_each_kind_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, error, kind):
    assert isinstance(error, RecpoError) and error.kind == kind

    def fail(cfg):
        raise error

    monkeypatch.setattr(recpo.train, "train", fail)
    argv = ["recpo.train", "+experiment=demo", f"hydra.run.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit:
        recpo.train.main()
    assert exit.value.code == 2
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "ERROR" in line]
    assert len(lines) == 1 and lines[0].endswith(f"{kind}: {error}"), lines
    assert "Traceback" not in out.out + out.err


def test_data_error_names_the_place():
    err = DataError("unknown item id(s) [99]", "d/train_data.parquet", 4, "seq")
    assert str(err) == "d/train_data.parquet, row 4, column 'seq': unknown item id(s) [99]"
    assert isinstance(err, ValueError) and err.row == 4 and err.column == "seq"
