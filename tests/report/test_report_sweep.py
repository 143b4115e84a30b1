"""recpo.report end to end on a real tiny sweep: ``recpo.train -m +experiment=demo
seed=0,1`` (synthetic data, tiny backbone, 16 training rows, one epoch per stage)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recpo.report import build_report
from tests.conftest import compose, run_train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def first_present(cfg, *paths: str) -> str:
    """The first of ``paths`` the composed config has (the config layout moves)."""
    for path in paths:
        if OmegaConf.select(cfg, path, default="<absent>") != "<absent>":
            return path
    raise AssertionError(f"none of {paths} in the train config")


def test_report_of_a_real_two_seed_sweep(tmp_path):
    cfg = compose(["+experiment=demo"], tmp_path / "compose")
    sweep = tmp_path / "multirun" / "demo"
    # A few dozen rows, one epoch per stage, a training-log line per step (about 25 s of
    # CPU for both jobs and the report).
    caps = [
        "data.source.synthetic.num_users=40",
        f"{first_present(cfg, 'sft.max_train_examples', 'data.max_train_examples')}=16",
        f"{first_present(cfg, 'po.batch_size', 'data.batch_size')}=4",
        f"{first_present(cfg, 'runtime.trainer.log_every_n_steps', 'trainer.log_every_n_steps')}=1",
        "eval.max_examples=4",
        "eval.max_new_tokens=3",
        "sft.max_epochs=1",
        "po.max_epochs=1",
    ]
    if OmegaConf.select(cfg, "po.max_train_examples", default="<absent>") != "<absent>":
        caps.append("po.max_train_examples=16")
    args = ["-m", "+experiment=demo", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    args += [f"paths.cache_dir={tmp_path / 'cache'}", *caps]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.rglob("results.json"))
    assert len(jobs) == 2

    report = build_report(sweep, tmp_path / "report")
    assert len(report.study.jobs) == 2 and report.study.unfinished == []
    assert report.study.varying() == {"method": ["DynamicPO", "SFT"], "seed": [0, 1]}

    # Table 2 against the jobs' own results.json, recomputed here.
    table = pd.read_csv(report.out / "table2.csv")
    results = [json.loads((job / "results.json").read_text()) for job in jobs]
    for method, prefix in (("DynamicPO", "po:"), ("SFT", "sft:")):
        (row,) = table[table["method"] == method].to_dict("records")
        for metric in ("gen_hr@1", "valid_ratio", "hr@1", "hr@5", "ndcg@5"):
            values = [r[f"{prefix}test/{metric}"] for r in results]
            assert row[f"synthetic/test/{metric}/n"] == 2
            assert row[f"synthetic/test/{metric}/mean"] == pytest.approx(np.mean(values))
            assert row[f"synthetic/test/{metric}/std"] == pytest.approx(
                np.std(values, ddof=1), abs=1e-12
            )

    # Training curves of both seeds; one K, so no collapse curve, and the report says why.
    names = {f.name for f in report.figures}
    assert names == {"win_rate.png", "boundary_shares.png", "selected_negatives.png"}
    for name in names:
        assert (report.out / name).read_bytes()[:8] == PNG_MAGIC
    text = (report.out / "report.md").read_text()
    assert "Collapse curve (Fig. 4a) skipped" in text and "(K = 15)" in text
    assert "Table 4 (objective × with/without DynamicPO) skipped" in text
