"""The whole pipeline (SFT -> PO -> evaluation) from ``python -m recpo.train`` under
DeepSpeed ZeRO-2 on 2 CPU ranks (DeepSpeed's CPU accelerator, gloo), through the real
engines: Lightning's DeepSpeedStrategy with only its CUDA checks lifted
(tests/distributed/cpu_deepspeed.py). The first DeepSpeed run on a machine compiles a
shared-memory op (about a minute, g++).

Tolerances: ZeRO-2 and DDP reduce the same gradients in another order, so their fp32
weights agree within 5e-4 (measured: 1.2e-7 after SFT, 2.9e-5 after PO) and their
metrics within 1/16, one of the 16 evaluated rows (measured: all equal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_train
from tests.distributed.runs import DDP, PIPELINE, predictions, reevaluate_in_one_process

pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
pytestmark = pytest.mark.slow

# 64 training rows in batches of 4 per rank, accumulation 2: 4 optimizer steps a stage.
SMALL_BATCHES = [
    "sft.max_train_examples=64",
    "po.max_train_examples=64",
    "sft.batch_size=4",
    "po.batch_size=4",
    "trainer.accumulate_grad_batches=2",
]
ZERO2 = [
    "trainer=deepspeed_zero2",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "trainer.strategy._target_=tests.distributed.cpu_deepspeed.CPUDeepSpeedStrategy",
]
ENV = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def _args(tmp: Path, name: str, engine: list[str], extra: list[str] = ()) -> list[str]:
    return [
        *PIPELINE,
        *SMALL_BATCHES,
        *engine,
        *extra,
        "+callbacks.rank_weights._target_=tests.distributed.cpu_deepspeed.SaveTrainedWeights",
        f"+callbacks.rank_weights.out={tmp}/{name}-weights",
        f"hydra.run.dir={tmp}/{name}",
        f"paths.sft_dir={tmp}/{name}-sft",
        f"paths.cache_dir={tmp}/cache",
    ]


def _run(tmp: Path, name: str, engine: list[str], extra: list[str] = (), env=None) -> dict:
    proc = run_train(_args(tmp, name, engine, extra), timeout=900, env={**ENV, **(env or {})})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads((tmp / name / "results.json").read_text())


def _weights(tmp: Path, name: str, stage: str, rank: int = 0) -> dict[str, torch.Tensor]:
    return torch.load(tmp / f"{name}-weights" / f"{stage}-rank{rank}.pt")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize(
    "finetune,precision", [("full", "32-true"), ("lora", "32-true"), ("lora", "bf16-mixed")]
)
def test_zero2_pipeline_on_two_cpu_ranks(tmp_path, finetune, precision):
    """Both ranks hold the same trained weights after each stage; a checkpoint holds the
    trained parameters only; one results.json, one CSV log and one W&B run per stage;
    evaluation shared by the ranks equals one process's; with full fine-tuning the
    results equal the DDP run's. ``bf16-mixed``: DeepSpeed's bf16 weights with fp32
    master weights in the optimizer, as on the paper's GPUs."""
    tune = [f"backbone.finetune={finetune}", "logger=wandb"]
    engine = [a for a in ZERO2 if not a.startswith("trainer.precision")]
    engine.append(f"trainer.precision={precision}")
    results = _run(tmp_path, "zero2", engine, tune, env={"WANDB_MODE": "offline"})
    run = tmp_path / "zero2"
    for stage in ("sft", "po"):
        trained = _weights(tmp_path, "zero2", stage)
        assert trained and _max_diff(trained, _weights(tmp_path, "zero2", stage, 1)) == 0.0
        # DeepSpeed's checkpoint folder: the module's state is the trained parameters
        # (and buffers), never the frozen base or reference weights.
        states = (
            run / stage / "checkpoints" / "last.ckpt" / "checkpoint" / "mp_rank_00_model_states.pt"
        )
        module = torch.load(states, map_location="cpu", weights_only=False)["module"]
        params = {k for k in module if "rotary" not in k and "inv_freq" not in k}
        # DeepSpeed also stores the alias of a tied weight (the tiny backbone ties
        # lm_head to the embeddings): a frozen lm_head (LoRA base, reference copy), one
        # vocabulary x width matrix, and nothing else.
        assert set(trained) <= params, sorted(set(trained) - params)[:5]
        extra = params - set(trained)
        assert len(extra) <= 1 and all(k.endswith("lm_head.weight") for k in extra), extra
        stored_bytes = sum(module[k].numel() * module[k].element_size() for k in params)
        assert states.stat().st_size < 1.2 * stored_bytes + 256 * 1024
        assert all(("lora_" in k) == (finetune == "lora") for k in trained)
    # Training changed the weights (not a correctness check, a guard on the one above).
    sft, po = _weights(tmp_path, "zero2", "sft"), _weights(tmp_path, "zero2", "po")
    if finetune == "full":
        assert _max_diff(sft, po) > 0
    # One of each per job and stage, written by rank 0.
    assert list(tmp_path.glob("zero2/results.json"))
    assert sorted(p.parent.name for p in run.glob("logs/*/metrics.csv")) == ["po", "sft"]
    assert len(list(run.glob("wandb/offline-run-*"))) == 2
    assert results["sft:test/rows"] == results["po:test/rows"] == 16
    if finetune != "full":
        return
    # Full fine-tuning in fp32: the same models as one process and as DDP.
    single = reevaluate_in_one_process(run, tmp_path / "single")
    for stage in ("sft", "po"):
        got = {k.split(":", 1)[1]: v for k, v in results.items() if k.startswith(f"{stage}:")}
        assert got == pytest.approx(single[stage], rel=1e-12, abs=1e-12), stage
        assert predictions(run / "eval" / stage) == predictions(tmp_path / "single" / stage)
    ddp = _run(tmp_path, "ddp", DDP, tune[:1])
    for stage in ("sft", "po"):
        diff = _max_diff(_weights(tmp_path, "zero2", stage), _weights(tmp_path, "ddp", stage))
        print(f"{stage}: largest weight difference ZeRO-2 vs DDP {diff:.2e}")
        assert diff < 5e-4, stage
    assert results.keys() == ddp.keys()
    for key, value in results.items():
        assert abs(value - ddp[key]) <= 1 / 16 + 1e-9, key
    differ = sorted(k for k in results if results[k] != pytest.approx(ddp[k], abs=1e-12))
    print("metrics that differ ZeRO-2 vs DDP:", differ)


def test_zero2_run_killed_during_po_resumes_to_the_same_results(tmp_path):
    """kill -9 of the whole job (both ranks) after PO's first checkpoint, then the same
    command again: it resumes PO from DeepSpeed's last.ckpt folder and ends with the
    results of an uninterrupted run."""
    extra = ["po.max_epochs=3"]
    expected = _run(tmp_path, "full", ZERO2, [*extra, "paths.sft_dir=" + str(tmp_path / "sft")])
    args = _args(tmp_path, "killed", ZERO2, [*extra, "paths.sft_dir=" + str(tmp_path / "sft")])
    env = {**os.environ, "WANDB_MODE": "disabled", **ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recpo.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the job's ranks in one process group, killed together
    )
    latest = tmp_path / "killed" / "po" / "checkpoints" / "last.ckpt" / "latest"
    deadline = time.time() + 900
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists() and not (tmp_path / "killed" / "results.json").exists(), (
        "the run was not interrupted during PO"
    )
    resumed = run_train(args, timeout=900, env=ENV)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "resuming po from" in resumed.stdout + resumed.stderr
    got = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert got == pytest.approx(expected, abs=1e-6)
    diff = _max_diff(_weights(tmp_path, "killed", "po"), _weights(tmp_path, "full", "po"))
    assert diff < 1e-6
