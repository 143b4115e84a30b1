"""Cluster sweeps through Hydra's submitit launcher: `hydra/launcher=local` runs a
sweep's jobs at once with one task per device and gives the basic launcher's results;
on SLURM the ranks come from SLURM and Lightning starts no process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

from recpo.errors import ConfigError
from recpo.ranks import is_rank_zero
from recpo.training.distributed import export_launcher_ranks
from tests.conftest import compose, run_train
from tests.distributed.runs import DDP, PIPELINE

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")

# Rank 1 of a 2-task SLURM job on one node, as srun sets it for submitit's script.
SLURM_RANK_1 = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "recpo",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_JOB_NODELIST": "gpu-node-07",
    "SLURM_NODELIST": "gpu-node-07",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
}
EXPORTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_slurm_ranks_come_from_slurm_and_nothing_is_spawned(tmp_path):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from recpo.training.trainer import make_trainer

    cfg = compose(
        ["+experiment=demo", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
        tmp_path,
    )
    clean = {k: v for k, v in os.environ.items() if k not in EXPORTED and not k.startswith("SLURM")}
    with mock.patch.dict(os.environ, {**clean, **SLURM_RANK_1}, clear=True):
        assert export_launcher_ranks(devices=2, num_nodes=1)
        assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
            "1",
            "2",
            "1",
        )
        assert os.environ["MASTER_ADDR"] == "gpu-node-07"
        assert not is_rank_zero()  # rank 1 writes no config, results or W&B run
        trainer = make_trainer(cfg, "sft", max_epochs=1)
        env = trainer.strategy.cluster_environment
        assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally
        assert (trainer.global_rank, trainer.local_rank, trainer.world_size) == (1, 1, 2)
        # Lightning's launcher checks the tasks against the devices, starts no process
        # and runs the stage in this one.
        launcher = trainer.strategy.launcher
        with mock.patch.object(launcher, "_call_children_scripts", side_effect=AssertionError):
            assert launcher.launch(lambda: "ran here") == "ran here"
        assert launcher.procs == []


def test_a_multi_device_job_as_one_task_is_refused():
    single = {
        **SLURM_RANK_1,
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }
    clean = {k: v for k, v in os.environ.items() if k not in EXPORTED and not k.startswith("SLURM")}
    with mock.patch.dict(os.environ, {**clean, **single}, clear=True):
        with pytest.raises(ConfigError, match="tasks_per_node"):
            export_launcher_ranks(devices=4, num_nodes=1)
        assert not export_launcher_ranks(devices=1, num_nodes=1)  # one device: nothing to do
        assert "RANK" not in os.environ
    with mock.patch.dict(os.environ, {**clean, **SLURM_RANK_1}, clear=True):
        with pytest.raises(ConfigError, match="started 2 tasks"):
            export_launcher_ranks(devices=4, num_nodes=1)


def _sweep(tmp: Path, name: str, extra: list[str], launcher: list[str]) -> dict[str, dict]:
    sweep = tmp / name
    proc = run_train(
        [
            "-m",
            *PIPELINE,
            *extra,
            *launcher,
            "objective=dmpo,dynamicpo",
            f"hydra.sweep.dir={sweep}",
            f"paths.sft_dir={tmp}/{name}-sft",
            f"paths.cache_dir={tmp}/cache",
        ],
        timeout=900,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    found = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))}
    assert sorted(found) == ["0", "1"], sorted(sweep.rglob("*"))
    return found


@pytest.mark.parametrize(
    "extra",
    [pytest.param([], id="one-process"), pytest.param(DDP, id="ddp-2-cpu", marks=pytest.mark.slow)],
)
def test_submitit_local_sweep_gives_the_basic_launchers_results(tmp_path, extra):
    """The same 2-job sweep (DMPO and DynamicPO over one SFT key) through the basic
    launcher (one job after the other) and through submitit_local (both jobs at once:
    one trains SFT, the other waits for it; with DDP each job's 2 ranks are submitit
    tasks)."""
    basic = _sweep(tmp_path, "basic", extra, [])
    submitit = _sweep(tmp_path, "submitit", extra, ["hydra/launcher=local"])
    for job in ("0", "1"):
        assert submitit[job] == pytest.approx(basic[job], rel=1e-9, abs=1e-9), job
    folder = tmp_path / "submitit" / ".submitit"
    logs = "".join(
        p.read_text() for p in sorted(folder.rglob("*.out")) + sorted(folder.rglob("*.err"))
    )
    if extra:  # each job ran as 2 submitit tasks, and its evaluation was shared by them
        assert logs.count("local_rank=1(2)") == 2
        assert "on rank 1 of 2" in logs
    stored = [p for p in (tmp_path / "submitit-sft").iterdir() if p.is_dir()]
    assert len(stored) == 1  # one SFT model for both jobs
    trained = [job for job in ("0", "1") if (tmp_path / "submitit" / job / "sft").exists()]
    assert len(trained) == 1
