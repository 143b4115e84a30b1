"""``logger=wandb``: one offline W&B run per (job, stage) of a ``-m`` sweep, each with the
whole config, its stage as job type, the sweep's group and the stage's evaluation in its
summary; the report's group rule is the training runs' own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from recpo.training.loggers import close_stage_loggers, job_group, run_name, wandb_group
from tests.conftest import compose
from tests.report.test_report_wandb import wandb_records


def read_run(log: Path) -> dict:
    """What an offline ``run-*.wandb`` file says: the run record, the config, the final
    summary (its updates applied in order), the history rows and the exit code."""
    run, config, summary, history, exit_code = None, {}, {}, [], None
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
        elif kind == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert run is not None, f"{log}: no run record"
    return {
        "run": run,
        "config": config,
        "summary": summary,
        "history": history,
        "exit_code": exit_code,
    }


def test_sweep_writes_one_run_per_job_and_stage(wandb_sweep):
    """Two jobs differing in K: job 0 trains SFT, job 1 reuses it (and still gets an SFT
    run holding the SFT evaluation). The preference run's summary also holds the SFT
    evaluation (``sft/<key>``), and ``logger=wandb`` keeps the CSV log beside W&B."""
    sweep = wandb_sweep / "multirun" / "wb"
    jobs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(jobs) == 2
    assert len(list(sweep.rglob("offline-run-*"))) == 4

    seen_names = set()
    for job in jobs:
        saved = OmegaConf.load(job / "config.yaml")
        results = json.loads((job / "results.json").read_text())
        runs = [read_run(log) for log in (job / "wandb").glob("offline-run-*/run-*.wandb")]
        assert sorted(r["run"].job_type for r in runs) == ["po", "sft"]
        for r in runs:
            stage = r["run"].job_type
            assert r["run"].run_group == "wb" == wandb_group(sweep)
            assert r["run"].display_name.startswith(f"{stage}:")
            assert f"po.num_negatives={saved.po.num_negatives}" in r["run"].display_name
            assert r["exit_code"] == 0
            # The whole config of this job, with the stage.
            config = r["config"]
            assert config["stage"] == stage
            assert config["po"]["num_negatives"] == saved.po.num_negatives
            assert config["seed"] == saved.seed
            assert Path(config["paths"]["output_dir"]).resolve() == job.resolve()
            assert config["logger"]["wandb"]["group"] is None  # as configured
            assert set(config) >= {"data", "backbone", "sft", "po", "objective", "eval"}
            # The stage's evaluation, as in results.json, on every split.
            stage_results = {
                k.split(":", 1)[1]: v for k, v in results.items() if k.startswith(f"{stage}:")
            }
            assert {"test/hr@1", "test/gen_hr@1", "val/valid_ratio"} <= set(stage_results)
            for key, value in stage_results.items():
                assert r["summary"][key] == pytest.approx(value), (job, stage, key)
            sft_keys = {k for k in r["summary"] if k.startswith("sft/")}
            if stage == "po":
                sft_results = {
                    f"sft/{k.split(':', 1)[1]}": v
                    for k, v in results.items()
                    if k.startswith("sft:")
                }
                assert sft_keys == set(sft_results)
                for key, value in sft_results.items():
                    assert r["summary"][key] == pytest.approx(value), (job, key)
            else:
                assert not sft_keys
            seen_names.add(r["run"].display_name)
        # The CSV log beside W&B, with the training diagnostics.
        for stage in ("sft", "po") if job == jobs[0] else ("po",):
            assert (job / "logs" / stage / "metrics.csv").is_file(), (job, stage)
        header = (job / "logs" / "po" / "metrics.csv").read_text().splitlines()[0]
        assert "train/rewards/win_rate" in header.split(",")
    assert len(seen_names) == 4
    # Job 1 reused job 0's SFT model: one SFT model stored, two SFT runs.
    assert len([p for p in (wandb_sweep / "cache" / "sft").iterdir() if p.is_dir()]) == 1


def test_group_and_name_outside_a_sweep(tmp_path):
    cfg = compose(["+experiment=demo", "logger=wandb"], tmp_path)
    assert cfg.logger.wandb.group is None
    # compose() puts the run folder at tmp_path / "run" or similar: its own group.
    assert job_group(cfg) == wandb_group(cfg.paths.output_dir)
    assert run_name(cfg, "po") == f"po:{cfg.task_name}"
    cfg.logger.wandb.group = "mine"
    assert job_group(cfg) == "mine"


@pytest.mark.parametrize(
    ("folder", "group"),
    [
        ("/x/multirun/negatives/lastfm-tiny", "negatives/lastfm-tiny"),
        ("/x/multirun/a/multirun/b", "b"),
        ("/x/outputs/train/2026-01-01_00-00-00-000000", "train/2026-01-01_00-00-00-000000"),
        ("/x/sweeps/mine", "mine"),
        ("/x/multirun", "multirun"),
    ],
)
def test_wandb_group(folder, group):
    assert wandb_group(folder) == group


def test_close_without_wandb_logger_is_a_no_op(tmp_path):
    cfg = compose(["+experiment=demo"], tmp_path)  # logger=csv
    close_stage_loggers(cfg, "sft", {"test/hr@1": 0.5})
    assert not list(Path(cfg.paths.output_dir).rglob("offline-run-*"))


def test_baseline_run_has_its_evaluation(tmp_path, monkeypatch):
    """A baseline job: one W&B run, job type ``baseline``, the val/test metrics it returns
    in its summary."""
    pytest.importorskip("wandb")
    from recpo.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose(["+experiment=lastfm_sasrec", "data=synthetic", "logger=wandb"], tmp_path)
    with open_dict(cfg):
        cfg.trainer.fast_dev_run = True
        cfg.callbacks = {}
    metrics = train(cfg)
    (log,) = list(Path(cfg.paths.output_dir).glob("wandb/offline-run-*/run-*.wandb"))
    r = read_run(log)
    assert r["run"].job_type == "baseline"
    assert r["run"].run_group == wandb_group(cfg.paths.output_dir)
    assert r["run"].display_name == f"baseline:{cfg.task_name}"
    assert r["config"]["baseline"]["max_history"] == cfg.baseline.max_history
    assert set(metrics) == {f"{s}/{m}" for s in ("val", "test") for m in ("hr@1", "hr@5", "ndcg@5")}
    for key, value in metrics.items():
        assert r["summary"][key] == pytest.approx(value)
    assert r["exit_code"] == 0


def test_only_rank_zero_creates_runs(tmp_path, monkeypatch):
    """On another rank neither a trained stage's loggers nor closing a stage (which
    creates the run of a reused stage on rank 0) write a W&B run."""
    pytest.importorskip("wandb")
    from lightning.pytorch.utilities import rank_zero_only

    from recpo.training.loggers import make_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    cfg = compose(["+experiment=demo", "logger=wandb"], tmp_path)
    loggers = make_loggers(cfg, "po")  # the CSV log and the W&B logger
    (logger,) = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
    assert "DummyExperiment" in type(logger.experiment).__name__
    close_stage_loggers(cfg, "po", {"test/hr@1": 0.5})
    close_stage_loggers(cfg, "sft", {"test/hr@1": 0.5})
    assert not list(tmp_path.rglob("offline-run-*"))
