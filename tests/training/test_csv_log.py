"""A resumed stage keeps the CSV training log of its earlier attempt (Lightning's CSV
writer deletes an existing metrics.csv when it starts)."""

from __future__ import annotations

import csv

import pytest
from omegaconf import OmegaConf

from recpo.training.loggers import make_loggers
from tests.conftest import compose
from tests.training.test_checkpoints import fit, setup  # noqa: F401  (fixture)

CSV = {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": "X", "name": "logs"}}


def rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def with_csv(cfg, out):
    cfg = cfg.copy()
    cfg.paths.output_dir = str(out)
    cfg.logger = OmegaConf.create(CSV)
    cfg.logger.csv.save_dir = str(out)
    return cfg


def test_second_logger_of_a_stage_appends_to_the_first_ones_rows(tmp_path):
    cfg = with_csv(compose([], tmp_path / "run"), tmp_path / "run")
    (first,) = make_loggers(cfg, "po")
    first.log_metrics({"train/loss": 0.7}, step=0)
    first.log_metrics({"train/loss": 0.6}, step=1)
    first.save()
    (second,) = make_loggers(cfg, "po")  # a resumed attempt in the same folder
    second.log_metrics({"train/loss": 0.5, "val/hr@1": 0.25}, step=2)
    second.save()
    got = rows(tmp_path / "run" / "logs" / "po" / "metrics.csv")
    assert [(r["step"], r["train/loss"], r["val/hr@1"]) for r in got] == [
        ("0", "0.7", ""),
        ("1", "0.6", ""),
        ("2", "0.5", "0.25"),
    ]


def test_resumed_run_keeps_the_first_attempts_log(setup):  # noqa: F811
    cfg, dm, policy, tmp = setup
    out = tmp / "csv-resumed"
    cfg = with_csv(cfg, out)
    with pytest.raises(RuntimeError, match="stopped"):
        fit(cfg, dm, policy(), out, stop=True)
    path = out / "logs" / "po" / "metrics.csv"
    first = {int(r["step"]) for r in rows(path)}
    assert first and max(first) < 2  # the first epoch's two steps
    fit(cfg, dm, policy(), out)  # resumes from last.ckpt
    steps = {int(r["step"]) for r in rows(path)}
    assert first < steps and max(steps) == 3
