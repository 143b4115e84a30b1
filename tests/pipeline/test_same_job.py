"""A finished job folder is reused only by a job with the same settings; where files
go, runtime settings, loggers and the optimized metric do not make another job."""

import pytest
from omegaconf import OmegaConf

from recpo.train import check_same_job


def _cfg(**over):
    base = {
        "seed": 0,
        "objective": {"_target_": "recpo.objectives.dmpo", "beta": 1.0},
        "paths": {"output_dir": "a"},
        "runtime": {"torch_threads": 1},
        "logger": {"csv": {"name": "logs"}},
        "optimized_metric": "val/hr@1",
    }
    base.update(over)
    return OmegaConf.create(base)


def test_runtime_logger_and_paths_do_not_make_another_job(tmp_path):
    saved = tmp_path / "config.yaml"
    OmegaConf.save(_cfg(), saved)
    check_same_job(
        _cfg(
            paths={"output_dir": "b"},
            runtime={"torch_threads": 2},
            logger={"wandb": {"group": None}},
            optimized_metric="val/ndcg@5",
        ),
        saved,
    )


def test_other_settings_are_refused(tmp_path):
    saved = tmp_path / "config.yaml"
    OmegaConf.save(_cfg(), saved)
    with pytest.raises(RuntimeError, match="different settings"):
        check_same_job(_cfg(seed=1), saved)


def test_a_job_saved_before_the_data_reader_key_is_the_same_job(tmp_path):
    """data.source.reader names code (the format is data.source.format): a finished job
    whose config.yaml predates the key is still this job; another format is not."""
    source = {"format": "llara", "name": "lastfm", "padding_id": 4606}
    reader = {"_target_": "recpo.data.formats.llara.read_llara", "_partial_": True}
    saved = tmp_path / "config.yaml"
    OmegaConf.save(_cfg(data={"source": source}), saved)
    check_same_job(_cfg(data={"source": {**source, "reader": reader}}), saved)
    with pytest.raises(RuntimeError, match="different settings"):
        check_same_job(_cfg(data={"source": {**source, "format": "raw"}}), saved)
