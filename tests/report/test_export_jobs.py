"""scripts/export_jobs.py: what a report needs from finished jobs, nothing else."""

from pathlib import Path

from tests.conftest import load_script


def _export_module():
    return load_script("scripts/export_jobs.py")


def _job(folder: Path, finished: bool) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "logs" / "po").mkdir(parents=True)
    (folder / "logs" / "po" / "metrics.csv").write_text("step,train/loss\n0,0.69\n")
    (folder / "po" / "checkpoints").mkdir(parents=True)
    (folder / "po" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    if finished:
        (folder / "results.json").write_text('{"test/hr@1": 0.5}')


def test_finished_jobs_are_exported_with_config_results_and_log(tmp_path):
    sweep = tmp_path / "multirun" / "negatives" / "lastfm-tiny"
    _job(sweep / "objective=dmpo,po.num_negatives=1", finished=True)
    _job(sweep / "objective=dmpo,po.num_negatives=3", finished=False)
    out = tmp_path / "jobs"
    assert _export_module().export(tmp_path / "multirun", out) == (1, 1)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    job = "negatives/lastfm-tiny/objective=dmpo,po.num_negatives=1"
    assert files == [f"{job}/config.yaml", f"{job}/logs/po/metrics.csv", f"{job}/results.json"]


def test_hits_a_job_holds_without_predictions_are_exported(tmp_path):
    """A restored SFT evaluation (paths.sft_evals) brings its rows as hits, not predictions."""
    job = tmp_path / "multirun" / "main" / "seed0"
    _job(job, finished=True)
    (job / "eval" / "sft").mkdir(parents=True)
    (job / "eval" / "sft" / "test_hits.json").write_text('{"rows": [0, 1], "hr@1": "10"}\n')
    out = tmp_path / "jobs"
    assert _export_module().export(tmp_path / "multirun", out) == (1, 0)
    exported = out / "main" / "seed0" / "eval" / "sft" / "test_hits.json"
    assert exported.read_text() == '{"rows": [0, 1], "hr@1": "10"}\n'


def test_the_sft_log_of_a_job_that_trained_its_sft_model_is_exported(tmp_path):
    job = tmp_path / "multirun" / "main" / "seed0"
    _job(job, finished=True)
    (job / "logs" / "sft").mkdir()
    (job / "logs" / "sft" / "metrics.csv").write_text("step,train/loss\n9,1.61\n")
    out = tmp_path / "jobs"
    assert _export_module().export(tmp_path / "multirun", out) == (1, 0)
    exported = out / "main" / "seed0" / "logs" / "sft" / "metrics.csv"
    assert exported.read_text() == "step,train/loss\n9,1.61\n"
