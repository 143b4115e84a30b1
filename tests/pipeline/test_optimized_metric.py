"""What ``recpo.train`` hands back to Hydra: ``optimized_metric``, a validation metric
by default, never silently a test metric or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recpo.train import ConfigError, check_optimized_metric, main, optimized_value, train
from tests.conftest import compose, run_train

METRICS = {"val/hr@1": 0.3, "test/hr@1": 0.5, "sft:val/hr@1": 0.2, "po:val/hr@1": 0.3}


def test_default_is_the_last_stages_validation_hr1(tmp_path):
    cfg = compose(["+experiment=demo"], tmp_path)
    assert cfg.optimized_metric == "val/hr@1"
    assert optimized_value(cfg, METRICS) == 0.3


def test_any_result_key_can_be_optimized(tmp_path):
    assert optimized_value(compose(["optimized_metric=sft:val/hr@1"], tmp_path), METRICS) == 0.2
    assert optimized_value(compose(["optimized_metric=test/hr@1"], tmp_path), METRICS) == 0.5
    assert optimized_value(compose(["optimized_metric=null"], tmp_path), METRICS) is None


def test_a_key_missing_from_the_results_is_a_clear_error(tmp_path):
    cfg = compose(["optimized_metric=val/hr@10"], tmp_path)
    with pytest.raises(ConfigError, match=r"optimized_metric='val/hr@10' is not among") as err:
        optimized_value(cfg, METRICS)
    assert "results.json" in str(err.value) and "val/hr@1" in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["eval.splits=[test]"], "needs split 'val'"),
        (["optimized_metric=po:val/hr@1", "stages=[sft]"], "names stage 'po'"),
    ],
)
def test_a_metric_the_run_cannot_produce_is_refused_before_training(tmp_path, overrides, message):
    cfg = compose(["+experiment=demo", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_producible_metrics_pass_the_check(tmp_path):
    for overrides in (
        ["+experiment=demo"],
        ["+experiment=demo", "optimized_metric=sft:test/gen_hr@1"],
        ["+experiment=lastfm_sasrec", "eval.splits=[test]"],  # baselines report val and test
    ):
        check_optimized_metric(compose(overrides, tmp_path))


def _finished_job(tmp_path) -> Path:
    """A run folder that holds a finished job of ``+experiment=demo``."""
    cfg = compose(["+experiment=demo"], tmp_path)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    OmegaConf.save(cfg, out / "config.yaml")
    (out / "results.json").write_text(json.dumps(METRICS))
    return out


def test_main_returns_the_optimized_metric(tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from tests.conftest import CONF

    out = _finished_job(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        full = hydra_compose("train", ["+experiment=demo"], return_hydra_config=True)
    HydraConfig.instance().set_config(full)
    try:
        for key, value in (("val/hr@1", 0.3), ("sft:val/hr@1", 0.2)):
            cfg = compose(["+experiment=demo", f"optimized_metric={key}"], tmp_path)
            assert Path(cfg.paths.output_dir) == out
            assert main.__wrapped__(cfg) == value  # the finished job is not run again
    finally:
        HydraConfig.instance().cfg = None


def test_cli_reports_a_missing_key_in_one_line(tmp_path):
    out = _finished_job(tmp_path)
    proc = run_train(["+experiment=demo", "optimized_metric=val/nope", f"hydra.run.dir={out}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: optimized_metric='val/nope'" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_reports_unknown_stages_in_one_line(tmp_path):
    """The pipeline's own config checks (here ``stages``) end the same way: one line,
    exit code 2."""
    proc = run_train(["+experiment=demo", "stages=[eval]", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: stages=['eval']: expected one of" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
