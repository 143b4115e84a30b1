"""Shared fixtures: small on-disk datasets in each format, the real-data folder, Hydra compose."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_script(relative: str):
    """A script of the tree that is not in a package (``experiments/...``,
    ``scripts/...``), loaded as a module so a test can call its functions."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_train(
    args: list[str], timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m recpo.train ARGS`` from the repository root, output captured; W&B
    disabled unless ``env`` (added to this process's environment) says otherwise."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "recpo.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**full_env, **(env or {})},
    )


@pytest.fixture(autouse=True)
def _rank_zero_restored():
    """Lightning records a Trainer's global rank in module state (``rank_zero_only.rank``)
    that outlives the Trainer: a test that builds one as rank 1 would silence every later
    test's loggers. Each test ends with the rank it started with."""
    from lightning.pytorch.utilities import rank_zero_only
    from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only

    before = rank_zero_only.rank, utils_rank_zero_only.rank
    yield
    rank_zero_only.rank, utils_rank_zero_only.rank = before


def shared_data_dir() -> Path | None:
    """The real datasets: RECPO_DATA_DIR, else ../shared/data beside the repo."""
    value = os.environ.get("RECPO_DATA_DIR")
    path = Path(value) if value else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real datasets not found: set RECPO_DATA_DIR or place them in ../shared/data")
    return path


def write_llara(
    folder: Path, num_items: int = 40, rows: int = 30, fmt: str = "parquet", seed: int = 0
) -> Path:
    """A small LLaRA-format folder: id2name.txt + three tables of seq/len_seq/next."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "id2name.txt").write_text(
        "".join(f"{i}::Item {i:03d}\n" for i in range(num_items)), encoding="utf-8"
    )
    rng = np.random.default_rng(seed)
    for stem in ("train_data", "Val_data", "Test_data"):
        recs = []
        for _ in range(rows):
            n = int(rng.integers(3, 11))
            items = rng.choice(num_items, size=n + 1, replace=False).tolist()
            seq = items[:n] + [num_items] * (10 - n)
            recs.append({"seq": seq, "len_seq": n, "next": items[n]})
        df = pd.DataFrame(recs)
        if fmt == "parquet":
            df.to_parquet(folder / f"{stem}.parquet", index=False)
        elif fmt == "jsonl":
            df.to_json(folder / f"{stem}.jsonl", orient="records", lines=True)
        else:
            df.to_pickle(folder / f"{stem}.df")
    return folder


@pytest.fixture
def llara_dir(tmp_path: Path) -> Path:
    return write_llara(tmp_path / "toy")


def compose(overrides: list[str], tmp_path: Path):
    """Compose the real train config (:func:`recpo.config.compose`) with outputs in
    ``tmp_path``."""
    from omegaconf import open_dict

    from recpo.config import compose as compose_config

    cfg = compose_config(overrides, output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path.parent / "recpo-test-cache")
    return cfg


@pytest.fixture(scope="session")
def wandb_sweep(tmp_path_factory) -> Path:
    """A 2-job ``-m`` demo sweep (K = 2, 3; DynamicPO) with ``logger=wandb``, W&B
    offline, shrunk to about 30 s on 2 cores. Returns its root: the sweep in
    ``multirun/wb`` (W&B group ``wb``), its SFT store in ``cache``. Job 0 trains SFT,
    job 1 reuses it. Shared by the W&B run, dashboard and report tests; read only."""
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("wandb_sweep")
    caps = [
        "data.source.synthetic.num_users=40",
        "sft.max_train_examples=16",
        "po.max_train_examples=16",
        "po.batch_size=4",
        "eval.max_examples=4",
        "eval.max_new_tokens=3",
        "sft.max_epochs=1",
        "po.max_epochs=1",
        "runtime.trainer.log_every_n_steps=1",  # a training row per step (4 per job)
    ]
    args = ["-m", "+experiment=demo", "logger=wandb", "po.num_negatives=2,3"]
    args += [f"hydra.sweep.dir={root / 'multirun' / 'wb'}", f"paths.cache_dir={root / 'cache'}"]
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(root / "wandb_dir"),
    }
    proc = run_train([*args, *caps], timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wandb run already in progress" not in proc.stderr
    return root
