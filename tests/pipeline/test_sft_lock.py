"""One SFT per key when jobs with the same SFT settings start together."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recpo.training.sft_cache import SFTLockTimeout, sft_key_lock
from tests.conftest import REPO
from tests.pipeline.test_sweeps import SMALL


def test_three_jobs_started_together_train_sft_once(tmp_path):
    """Three demo runs with one paths.sft_dir, started at once: one trains SFT, the
    other two wait for its lock and reuse the model and its evaluation."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recpo.train",
                *SMALL,
                f"objective={objective}",
                f"hydra.run.dir={tmp_path}/{objective}",
                f"paths.sft_dir={tmp_path}/sft",
                f"paths.cache_dir={tmp_path}/cache",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for objective in ("dmpo", "dynamicpo", "sdpo")
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], logs[0][-3000:]
    runs = [tmp_path / o for o in ("dmpo", "dynamicpo", "sdpo")]
    trained = [run for run in runs if (run / "sft").exists()]
    assert len(trained) == 1, trained  # exactly one job ran the SFT Trainer
    stored = [p for p in (tmp_path / "sft").iterdir() if p.is_dir()]
    assert len(stored) == 1 and (stored[0] / "sft_key.json").is_file()
    assert not list((tmp_path / "sft").glob("*.lock.owner"))
    assert sum("reusing SFT model" in log for log in logs) == 2
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    sft = [{k: v for k, v in r.items() if k.startswith("sft:")} for r in results]
    assert sft[0] and sft[0] == sft[1] == sft[2]
    pointers = {(run / "sft_model.txt").read_text() for run in runs}
    assert pointers == {str(stored[0].resolve()) + "\n"}


def test_a_held_lock_times_out_with_who_holds_it(tmp_path):
    """A second holder waits, then stops with a message naming the holder and the lock."""
    folder = tmp_path / "sft" / "synthetic-tiny-abc"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from recpo.training.sft_cache import sft_key_lock\n"
            f"with sft_key_lock(Path({str(folder)!r}), None, run_dir='first-job'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SFTLockTimeout, match="first-job") as err:
            with sft_key_lock(folder, 0.5, run_dir="second-job"):
                pass
        assert str(folder) + ".lock" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock went with it.
    with sft_key_lock(folder, 5, run_dir="third-job"):
        assert "third-job" in (tmp_path / "sft" / "synthetic-tiny-abc.lock.owner").read_text()
