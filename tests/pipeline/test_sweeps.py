"""Sweeps: SFT reuse, skipping finished jobs, DDP inside -m, resuming a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from recpo.train import MAX_NAME_BYTES, job_dirname, train
from tests.conftest import CONF, REPO, compose, run_train

SMALL = [
    "+experiment=demo",
    "data.source.synthetic.num_users=60",
    "sft.max_train_examples=48",
    "po.max_train_examples=48",
    "eval.max_examples=8",
    "eval.max_new_tokens=3",
    "sft.max_epochs=1",
    "po.max_epochs=1",
]


def test_committed_sweeps_compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    for path in sorted((CONF / "sweep").glob("[!_]*.yaml")):  # not the shared _base.yaml
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(
                "train",
                overrides=["+experiment=lastfm_dynamicpo", f"+sweep={path.stem}"],
                return_hydra_config=True,
            )
        params = cfg.hydra.sweeper.params
        assert params, path.name
        # Job folders are named by their settings (not by time), minus the path keys.
        assert "paths.data_dir" in cfg.hydra.job.config.override_dirname.exclude_keys
        # Each swept key exists: a job with the first value of every parameter composes
        # (a renamed key, e.g. data.num_negatives -> po.num_negatives, fails here).
        first = [f"{key}={str(values).split(',')[0]}" for key, values in params.items()]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            job = hydra_compose(
                "train", overrides=["+experiment=lastfm_dynamicpo", f"+sweep={path.stem}", *first]
            )
        for override in first:
            key, value = override.split("=")
            if "." in key:
                got = OmegaConf.select(job, key)
                if isinstance(got, float):  # 1e-5 is read as 1e-05
                    assert got == float(value), (path.name, override)
                else:
                    assert str(got).lower() == value.lower(), (path.name, override)


def test_sft_is_reused_across_po_settings(tmp_path):
    """Two runs that differ only in PO settings train SFT once."""
    runs = []
    for objective in ("dmpo", "dynamicpo"):
        cfg = compose([*SMALL, f"objective={objective}"], tmp_path / objective)
        with open_dict(cfg):
            cfg.paths.sft_dir = str(tmp_path / "sft")
        metrics = train(cfg)
        runs.append((cfg, metrics))
    (cfg_a, a), (cfg_b, b) = runs
    assert len([p for p in (tmp_path / "sft").iterdir() if p.is_dir()]) == 1  # and its .lock
    assert not (Path(cfg_b.paths.output_dir) / "sft").exists()  # no SFT training in the second run
    assert a["sft:test/hr@1"] == b["sft:test/hr@1"]
    pointer = (Path(cfg_a.paths.output_dir) / "sft_model.txt").read_text()
    assert pointer == (Path(cfg_b.paths.output_dir) / "sft_model.txt").read_text()


def test_finished_job_is_skipped_and_settings_are_checked(tmp_path):
    cfg = compose([*SMALL, "stages=[sft]"], tmp_path)
    first = train(cfg)
    ckpts = sorted(Path(cfg.paths.output_dir).rglob("*.ckpt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    assert train(cfg) == first
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps  # nothing retrained
    with open_dict(cfg):
        cfg.sft.max_epochs = 2
    with pytest.raises(RuntimeError, match="different settings"):
        train(cfg)


def test_long_overrides_give_a_short_stable_job_folder():
    short = "+experiment=lastfm_study,objective=dmpo,seed=0"
    assert job_dirname(short) == short
    long = ",".join(f"sft.setting_{i}=ü{i}" for i in range(40))  # 2-byte characters too
    name = job_dirname(long)
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name == job_dirname(long)  # the same overrides, the same folder
    assert name.startswith("sft.setting_0=ü0,") and name.split(",")[-1].startswith("hash-")
    # Overrides that differ only past the kept head still get different folders.
    assert job_dirname(long + ",seed=1") != job_dirname(long + ",seed=2")
    # The sweeps name their job folders through it.
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import read_write

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            overrides=["+experiment=lastfm_dynamicpo", "+sweep=negatives"],
            return_hydra_config=True,
        )
    with read_write(cfg.hydra.job):
        cfg.hydra.job.override_dirname = long
    assert cfg.hydra.sweep.subdir == name


def test_ddp_jobs_inside_a_multirun_sweep(tmp_path):
    """A 2-value -m sweep with 2 CPU processes per job: exactly two finished jobs, each
    trained under DDP once (not a re-launched sweep) with complete evaluation."""
    sweep = tmp_path / "sweep"
    proc = run_train(
        [
            "-m",
            *SMALL,
            "stages=[sft,po]",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
            f"paths.sft_dir={tmp_path}/sft",
            f"paths.cache_dir={tmp_path}/cache",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(sweep.rglob("results.json"))
    assert [p.parent.name for p in results] == ["0", "1"]
    log = proc.stdout + proc.stderr
    # One process group per job (the PO trainer reuses the one SFT set up).
    assert log.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert log.count("#0 :") == 1 and log.count("#1 :") == 1  # the sweep ran once
    for path, seed in zip(results, (0, 1)):
        metrics = json.loads(path.read_text())
        saved = (path.parent / "config.yaml").read_text()
        assert f"seed: {seed}" in saved
        for split in ("val", "test"):
            assert metrics[f"{split}/rows"] == 8  # full split, shared by the ranks, gathered once
            assert 0 <= metrics[f"po:{split}/hr@1"] <= 1 and 0 <= metrics[f"sft:{split}/hr@1"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, finetune):
    """Kill a run after its first PO checkpoint, run the same command again: it resumes
    and ends with the metrics of an uninterrupted run. LoRA checkpoints hold the adapter
    only (tests/training/test_checkpoints.py is the fast version)."""
    args = [
        "+experiment=demo",
        f"backbone.finetune={finetune}",
        "data.source.synthetic.num_users=150",
        "eval.max_examples=40",
        "sft.max_epochs=1",
        "po.max_epochs=3",
        f"paths.sft_dir={tmp_path}/sft",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    full = run_train([*args, f"hydra.run.dir={tmp_path}/full"], timeout=900)
    assert full.returncode == 0, full.stderr[-3000:]
    expected = json.loads((tmp_path / "full" / "results.json").read_text())

    run_dir = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recpo.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "po" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 900
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (run_dir / "results.json").exists(), (
        "the run was not interrupted mid-PO"
    )
    import torch

    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert all(("lora_" in k) == (finetune == "lora") for k in state)
    resumed = run_train([*args, f"hydra.run.dir={run_dir}"], timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming po from" in resumed.stdout + resumed.stderr
    got = json.loads((run_dir / "results.json").read_text())
    assert got == pytest.approx(expected, abs=1e-6)


def test_sft_reuse_off_trains_again_and_keeps_the_stored_model(tmp_path):
    cfg = compose([*SMALL, "stages=[sft]"], tmp_path / "a")
    with open_dict(cfg):
        cfg.paths.sft_dir = str(tmp_path / "sft")
    train(cfg)
    stored = next(p for p in (tmp_path / "sft").iterdir() if p.is_dir())
    stamp = (stored / "config.json").stat().st_mtime_ns
    again = compose([*SMALL, "stages=[sft]", "sft.reuse=false"], tmp_path / "b")
    with open_dict(again):
        again.paths.sft_dir = str(tmp_path / "sft")
    train(again)
    assert (stored / "config.json").stat().st_mtime_ns == stamp
    assert (Path(again.paths.output_dir) / "sft_model" / "config.json").is_file()


def test_retrained_sft_model_copies_its_stored_evaluation(tmp_path, monkeypatch):
    """After a lost cache the SFT model trains again under its key; with
    ``paths.sft_evals`` naming a weightless copy of its evaluation folder, that
    evaluation is copied (figures and row files) instead of computed. A copy of other
    weights (its ``weights.sha256``) or under another model's name is not taken."""
    import shutil

    import recpo.pipeline

    def run(name: str, sft_evals: Path | None) -> dict:
        cfg = compose([*SMALL, "stages=[sft]"], tmp_path / name)
        with open_dict(cfg):
            cfg.paths.sft_dir = str(tmp_path / "sft")
            cfg.paths.sft_evals = None if sft_evals is None else str(sft_evals)
        return train(cfg)

    first = run("a", None)
    stored = next(p for p in (tmp_path / "sft").iterdir() if p.is_dir())
    (eval_dir,) = stored.glob("eval-*")
    kept = tmp_path / "kept" / stored.name / eval_dir.name
    kept.mkdir(parents=True)
    for name in ("metrics.json", "test_predictions.jsonl"):
        shutil.copy2(eval_dir / name, kept / name)
    digest = recpo.pipeline.weights_digest(stored)
    (kept / "weights.sha256").write_text(digest + "\n")  # the evaluated weights
    shutil.rmtree(tmp_path / "sft")  # the cache is lost: model and evaluation

    evaluated = []
    real = recpo.pipeline.evaluate_model
    monkeypatch.setattr(
        recpo.pipeline, "evaluate_model", lambda *a, **k: evaluated.append(1) or real(*a, **k)
    )
    again = run("b", tmp_path / "kept")
    assert evaluated == []  # trained again, not evaluated again
    assert again == pytest.approx(first, abs=1e-6)
    assert (stored / "config.json").is_file()
    assert (stored / eval_dir.name / "test_predictions.jsonl").is_file()
    assert (tmp_path / "b" / "run" / "eval" / "sft" / "test_predictions.jsonl").is_file()

    assert recpo.pipeline.weights_digest(stored) == digest  # trained bit for bit again

    # Other weights under the same key (another CPU's last bits): evaluated.
    shutil.rmtree(tmp_path / "sft")
    (kept / "weights.sha256").write_text("0" * 64 + "\n")
    run("c", tmp_path / "kept")
    assert evaluated == [1]

    # Another model's name: nothing to copy, the retrained model is evaluated.
    shutil.rmtree(tmp_path / "sft")
    (kept / "weights.sha256").unlink()
    kept.parent.rename(kept.parent.with_name(stored.name + "-other"))
    run("d", tmp_path / "kept")
    assert evaluated == [1, 1]


def test_po_adapter_does_not_depend_on_what_ran_before(tmp_path):
    """With LoRA, PO starts from a fresh adapter: it is the same whether SFT was
    trained in this process (random draws consumed) or reused (none), so a sweep's
    first job and its re-run agree."""
    import torch

    from recpo.models.backbone import load_backbone
    from recpo.pipeline import build_datamodule, po_policy
    from recpo.training.common import save_pretrained_atomic

    cfg = compose([*SMALL, "backbone.finetune=lora"], tmp_path)
    dm = build_datamodule(cfg)
    ds = dm.load()

    def base():
        return load_backbone(
            cfg.backbone,
            model_dir=None,
            cache_dir=cfg.paths.cache_dir,
            titles=list(ds.catalog.names.values()),
            texts=dm.tokenizer_texts(),
        )

    sft = base()
    save_pretrained_atomic(sft.model, sft.tokenizer, tmp_path / "sft")
    adapters = []
    for draws in (0, 1000):
        torch.rand(draws)
        policy = po_policy(cfg, tmp_path / "sft", base())
        adapters.append({k: v for k, v in policy.model.named_parameters() if v.requires_grad})
    assert adapters[0] and set(adapters[0]) == set(adapters[1])
    for key, value in adapters[0].items():
        assert torch.equal(value, adapters[1][key]), key
