"""recpo.report on the hand-made folder of sweeps (tests/report/conftest.py): table cells
against hand-computed means, stds and n; figures are valid PNGs; bad folders give one
line and exit code 2."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from recpo.report import FACTORS, ReportError, build_report, collect
from recpo.report.__main__ import main
from recpo.report.curves import bin_stats, binned
from recpo.report.entries import job_entries
from recpo.report.figures.collapse import collapse_curve, curve_members
from recpo.report.figures.training import win_rate_bars
from recpo.report.jobs import Job
from recpo.report.methods import method_label, objective_class
from recpo.report.references import paired_stat
from recpo.report.stats import Stat
from tests.conftest import CONF, REPO, compose
from tests.report.conftest import job_config, job_name, make_sweeps, results, write_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(frame: pd.DataFrame, **labels) -> pd.Series:
    """The one row of ``frame`` whose label columns have these values."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in labels.items():
        mask &= frame[column].astype(str) == value
    assert mask.sum() == 1, (labels, frame[list(labels)].to_string())
    return frame[mask].iloc[0]


def cell(series: pd.Series, dataset: str, metric: str) -> tuple[float, float, int]:
    base = f"{dataset}/test/{metric}"
    return series[f"{base}/mean"], series[f"{base}/std"], int(series[f"{base}/n"])


def assert_cell(series, dataset, metric, mean, std, n):
    got_mean, got_std, got_n = cell(series, dataset, metric)
    assert got_n == n
    assert got_mean == pytest.approx(mean, abs=1e-9, nan_ok=True)
    if math.isnan(std):
        assert math.isnan(got_std)
    else:
        assert got_std == pytest.approx(std, abs=1e-6)


def assert_png(path: Path) -> None:
    from matplotlib.image import imread
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of the hand-made sweeps, built once for the tests that only read it."""
    root = make_sweeps(tmp_path_factory.mktemp("hand") / "multirun")
    return build_report(root, root.parent / "out")


def test_stat_is_mean_and_sample_std():
    """Mean .6, sample std sqrt(((-.1)² + 0 + .1²) / 2) = .1; one value has no std."""
    stat = Stat.of([0.5, 0.6, 0.7])
    assert (stat.mean, stat.n) == (pytest.approx(0.6), 3)
    assert stat.std == pytest.approx(0.1)
    assert stat.text() == "0.6000 ± 0.1000 (n=3)"
    one = Stat.of([0.25])
    assert one.n == 1 and math.isnan(one.std) and one.text() == "0.2500 (n=1)"
    assert Stat.of([]).text() == "–"


def test_jobs_and_unfinished_are_found(sweeps):
    study = collect(sweeps)
    # 12 + 1 negatives/datasets jobs, 4 ablation, 4 top-k, 4 alpha-gamma.
    assert len(study.jobs) == 13 + 4 + 4 + 4
    assert [p.name for p in study.unfinished] == ["unfinished-job"]
    varying = study.varying()
    assert varying["dataset"] == ["lastfm", "steam"]
    assert varying["num_negatives"] == [3, 15]
    assert varying["seed"] == [0, 1, 2]
    assert study.extra_keys == [] and study.duplicates == []


def test_table2_cells_match_hand_computed_values(report):
    frame = pd.read_csv(report.out / "table2.csv", dtype={"K": str, "α": str, "γ": str})
    assert list(frame.columns[:4]) == ["method", "K", "α", "γ"]
    dmpo3 = row(frame, method="DMPO", K="3")
    assert_cell(dmpo3, "lastfm", "gen_hr@1", 0.60, 0.10, 3)
    assert_cell(dmpo3, "lastfm", "valid_ratio", 0.91, 0.01, 3)
    assert_cell(dmpo3, "lastfm", "hr@1", 0.70, 0.10, 3)
    assert_cell(dmpo3, "steam", "gen_hr@1", math.nan, math.nan, 0)
    dmpo15 = row(frame, method="DMPO", K="15")
    assert_cell(dmpo15, "lastfm", "gen_hr@1", 0.44, 0.069282, 3)
    assert_cell(dmpo15, "steam", "gen_hr@1", 0.30, math.nan, 1)
    full = row(frame, method="DynamicPO", K="15", **{"α": "0.5", "γ": "6"})
    assert_cell(full, "lastfm", "gen_hr@1", 0.72, 0.02, 3)
    assert_cell(row(frame, method="DynamicPO", K="3"), "lastfm", "gen_hr@1", 0.60, 0.05, 3)
    # SFT: shared by every job of a seed, counted once per seed.
    sft = row(frame, method="SFT")
    assert_cell(sft, "lastfm", "gen_hr@1", 0.32, 0.02, 3)
    assert_cell(sft, "lastfm", "valid_ratio", 0.80, 0.0, 3)
    assert_cell(sft, "steam", "gen_hr@1", 0.25, math.nan, 1)
    grid = row(frame, method="DynamicPO", **{"α": "0.9", "γ": "10"})
    assert_cell(grid, "lastfm", "gen_hr@1", 1.0, math.nan, 1)
    # Paper order: SFT first, then DMPO, DynamicPO, its ablations, Top-K.
    order = list(dict.fromkeys(frame["method"]))
    assert order == [
        "SFT",
        "DMPO",
        "DynamicPO",
        "DynamicPO w/o Stage (I)",
        "DynamicPO w/o dynamic β",
        "Top-K (k=2)",
        "Top-K (k=3)",
    ]
    md = (report.out / "table2.md").read_text()
    assert "| DMPO | 3 | – | – | 0.6000 ± 0.1000 (n=3) | 0.9100 ± 0.0100 (n=3) |" in md
    assert "lastfm HitRatio@1" in md and "steam ValidRatio" in md


def test_table4_6_7_cells(report):
    t4 = pd.read_csv(report.out / "table4.csv", dtype=str)
    naive = row(t4, objective="DMPO", variant="naive", K="3")
    assert float(naive["lastfm/test/gen_hr@1/mean"]) == pytest.approx(0.60)
    dyn = row(t4, objective="DMPO", variant="DynamicPO", K="15", **{"α": "0.5", "γ": "6"})
    assert float(dyn["lastfm/test/gen_hr@1/std"]) == pytest.approx(0.02)

    t6 = pd.read_csv(report.out / "table6.csv", dtype=str)
    no_stage1 = row(t6, method="DynamicPO w/o Stage (I)")
    assert float(no_stage1["lastfm/test/gen_hr@1/mean"]) == pytest.approx(0.67)
    assert float(no_stage1["lastfm/test/gen_hr@1/std"]) == pytest.approx(0.014142, abs=1e-6)
    assert no_stage1["lastfm/test/gen_hr@1/n"] == "2"
    no_beta = row(t6, method="DynamicPO w/o dynamic β")
    assert float(no_beta["lastfm/test/gen_hr@1/mean"]) == pytest.approx(0.62)
    assert no_beta["α"] == "–"  # α and γ do nothing without dynamic β

    t7 = pd.read_csv(report.out / "table7.csv", dtype=str)
    k2 = row(t7, method="Top-K", strategy="k=2")
    assert float(k2["lastfm/test/gen_hr@1/mean"]) == pytest.approx(0.50)
    assert float(k2["lastfm/test/gen_hr@1/std"]) == pytest.approx(0.0)
    k3 = row(t7, method="Top-K", strategy="k=3")
    assert float(k3["lastfm/test/gen_hr@1/std"]) == pytest.approx(0.028284, abs=1e-6)
    assert "DynamicPO" in set(t7["method"])


def test_paired_differences_are_taken_seed_by_seed(report):
    """DynamicPO - DMPO and DMPO - SFT per seed, then mean ± std of the differences
    (hand-computed from the fixture's per-seed values in conftest.py)."""
    paired = pd.read_csv(report.out / "paired.csv", dtype=str)
    for column in [c for c in paired.columns if c.rsplit("/", 1)[-1] in ("mean", "std", "n")]:
        paired[column] = pd.to_numeric(paired[column])
    k3 = {"K": "3", "α": "0.5", "γ": "6"}
    # K = 3: (.55 - .50, .65 - .60, .60 - .70) = (.05, .05, -.10)
    assert_cell(
        row(paired, method="DynamicPO", minus="DMPO", **k3), "lastfm", "gen_hr@1", 0.0, 0.0866025, 3
    )
    # K = 15: (.70 - .40, .72 - .40, .74 - .52) = (.30, .32, .22)
    k15 = {**k3, "K": "15"}
    assert_cell(
        row(paired, method="DynamicPO", minus="DMPO", **k15),
        "lastfm",
        "gen_hr@1",
        0.28,
        0.0529150,
        3,
    )
    # DMPO K = 3 - SFT: (.50 - .30, .60 - .34, .70 - .32) = (.20, .26, .38)
    dmpo3 = row(paired, method="DMPO", minus="SFT", K="3")
    assert_cell(dmpo3, "lastfm", "gen_hr@1", 0.28, 0.0916515, 3)
    assert_cell(dmpo3, "steam", "gen_hr@1", math.nan, math.nan, 0)
    assert_cell(
        row(paired, method="DMPO", minus="SFT", K="15"), "steam", "gen_hr@1", 0.05, math.nan, 1
    )
    # a plain objective is compared with SFT only
    assert set(paired[paired["method"] == "DMPO"]["minus"]) == {"SFT"}


def test_ablations_and_topk_are_paired_with_the_full_method(report):
    """Each ablation and Top-K minus full DynamicPO of the same seed, K and objective
    settings: the α × γ jobs (full DynamicPO at seed 0, K = 15, other α and γ) are not
    taken as the reference, and the full method is not paired with itself."""
    paired = pd.read_csv(report.out / "paired.csv", dtype=str)
    for column in [c for c in paired.columns if c.rsplit("/", 1)[-1] in ("mean", "std", "n")]:
        paired[column] = pd.to_numeric(paired[column])
    # full DynamicPO at K = 15: .70, .72, .74 (seeds 0, 1, 2)
    no_stage1 = row(paired, method="DynamicPO w/o Stage (I)", minus="DynamicPO")
    assert_cell(no_stage1, "lastfm", "gen_hr@1", -0.04, 0.0, 2)  # .66 - .70, .68 - .72
    no_beta = row(paired, method="DynamicPO w/o dynamic β", minus="DynamicPO")
    assert_cell(no_beta, "lastfm", "gen_hr@1", -0.09, 0.0141421, 2)  # .60 - .70, .64 - .72
    topk2 = row(paired, method="Top-K (k=2)", minus="DynamicPO")
    assert_cell(topk2, "lastfm", "gen_hr@1", -0.21, 0.0141421, 2)  # .50 - .70, .50 - .72
    topk3 = row(paired, method="Top-K (k=3)", minus="DynamicPO")
    assert_cell(topk3, "lastfm", "gen_hr@1", -0.17, 0.0141421, 2)  # .52 - .70, .56 - .72
    full = paired[paired["method"] == "DynamicPO"]
    assert set(full["minus"]) == {"SFT", "DMPO"}
    # the rows of one method: SFT first, then the plain objective, then the full method
    assert list(paired[paired["method"] == "Top-K (k=2)"]["minus"])[0] == "SFT"


def test_expected_figures_are_valid_pngs(report):
    names = {f.name for f in report.figures}
    assert names == {
        "collapse_curve.png",  # steam has one K: no curve there
        "collapse_curve_paired.png",
        "win_rate__lastfm.png",
        "win_rate__steam.png",
        "boundary_shares__lastfm.png",
        "boundary_shares__steam.png",
        "selected_negatives.png",  # only lastfm ran DynamicPO / Top-K
        "alpha_gamma.png",
    }
    for name in names:
        assert_png(report.out / name)
    text = (report.out / "report.md").read_text()
    for name in names:
        assert f"]({name})" in text
    assert "unfinished-job" in text
    manifest = json.loads((report.out / "report.json").read_text())
    assert set(manifest["files"]) >= names | {"table2.csv", "table6.md", "runs.csv"}


def test_runs_csv_lists_every_result_used(report):
    runs = pd.read_csv(report.out / "runs.csv")
    # 25 finished jobs give 25 preference results and 4 SFT results (lastfm seeds 0-2, steam).
    assert (runs["stage"] == "po").sum() == 25
    assert (runs["stage"] == "sft").sum() == 4


def test_training_curves_are_binned_by_progress(sweeps):
    """Win rate step/10 + .01 seed over steps 0-9 in five intervals of two steps: per seed
    .2 b + .05 + .01 seed; over seeds 0-2 mean .2 b + .06, std .01. Boundary share of DMPO
    .1 + .01 step in thirds by the steps' middles (s + .5) / 10: {0-2}, {3-6}, {7-9} give
    .11, .145, .18."""
    study = collect(sweeps)
    (cond,) = [
        c
        for c in study.conditions
        if c.method == "DynamicPO"
        and c.factors["num_negatives"] == 15
        and c.factors["alpha"] == 0.5
    ]
    stats = bin_stats(binned(cond, "train/rewards/win_rate", 5), 5)
    assert [s.mean for s in stats] == pytest.approx([0.06, 0.26, 0.46, 0.66, 0.86])
    assert [s.std for s in stats] == pytest.approx([0.01] * 5)
    assert {s.n for s in stats} == {3}
    (dmpo,) = [
        c for c in study.conditions if c.method == "DMPO" and c.factors["num_negatives"] == 3
    ]
    thirds = bin_stats(binned(dmpo, "train/boundary/critical_share", 3), 3)
    assert [s.mean for s in thirds] == pytest.approx([0.11, 0.145, 0.18])


def label_of(target: str, **settings) -> str:
    """The method label of a job whose objective node is ``target`` with ``settings``."""
    config = OmegaConf.create({"objective": {"_target_": target, **settings}})
    return method_label(objective_class(target, Path("config.yaml")), target, settings, config)


def test_method_labels():
    dynamicpo = "recpo.objectives.plugin.dynamicpo"
    assert label_of(dynamicpo) == "DynamicPO"
    assert label_of(dynamicpo, stage1=False) == "DynamicPO w/o Stage (I)"
    assert label_of(dynamicpo, stage1=False, stage2=False) == "DynamicPO w/o Stage (I & II)"
    assert label_of(dynamicpo, stage2=False, dynamic_beta=False) == (
        "DynamicPO w/o Stage (II) & dynamic β"
    )
    assert label_of("recpo.objectives.plugin.dynamicpo_sdpo") == "DynamicPO-S-DPO"
    assert label_of("recpo.objectives.losses.sdpo") == "S-DPO"
    assert label_of("recpo.objectives.plugin.topk", k=4, dynamic_beta=False) == "Top-K (k=4)"
    assert label_of("recpo.objectives.plugin.topk", k=2, dynamic_beta=True) == (
        "Top-K (k=2) + dynamic β"
    )
    assert label_of("recpo.objectives.plugin.beta_dpo", stage1=False) == "β-DPO w/o Stage (I)"
    # Targets that name the class instead of the objective read the same.
    assert label_of("recpo.objectives.plugin.TopK", k=4, dynamic_beta=False) == "Top-K (k=4)"
    assert label_of("recpo.objectives.plugin.DynamicPOMPPO") == "DynamicPO-MPPO"
    assert label_of("recpo.objectives.losses.DMPO") == "DMPO"


def test_a_target_that_is_no_objective_is_one_line(tmp_path):
    for target, why in (
        ("recpo.objectives.plugin.no_such_objective", "does not import"),
        ("recpo.objectives.losses.dmpo_losses", "is not a recpo.objectives.Objective"),
    ):
        with pytest.raises(ReportError, match=why):
            objective_class(target, tmp_path / "config.yaml")


def test_factor_paths_first_present_wins(tmp_path):
    """A setting read from its new place when set there, from the old place otherwise;
    the candidate protocol defaults to published."""
    new = job_config("lastfm", "dmpo", 15, 0)
    new["po"]["num_negatives"] = 7
    old = job_config("lastfm", "dmpo", 9, 0)
    old["data"]["candidates"] = "independent"
    for name, cfg, k, protocol in (("new", new, 7, "published"), ("old", old, 9, "independent")):
        job = Job(tmp_path / name, OmegaConf.create(cfg), results(0.5, 0, 0.3))
        (po,) = [e for e in job_entries(job) if e.part == "po"]
        assert po.factors["num_negatives"] == k
        assert po.factors["candidates"] == protocol


@pytest.mark.parametrize("objective", sorted(p.stem for p in (CONF / "objective").glob("*.yaml")))
def test_real_configs_hold_every_needed_key(objective, tmp_path):
    """The config as recpo.train saves it (unresolved) names every setting the report reads:
    catches FACTORS falling behind a change of the config layout."""
    cfg = compose(["+experiment=demo", f"objective={objective}"], tmp_path)
    folder = tmp_path / "job"
    folder.mkdir()
    OmegaConf.save(cfg, folder / "config.yaml", resolve=False)
    job = Job(folder, OmegaConf.load(folder / "config.yaml"), results(0.5, 0, 0.3))
    sft, po = job_entries(job)
    assert (sft.part, po.part) == ("sft", "po")
    assert po.factors["dataset"] == "synthetic"
    assert po.factors["backbone"] == "tiny"
    assert isinstance(po.factors["num_negatives"], int)
    assert po.objective is type(get_method(cfg.objective._target_))
    assert po.method.startswith(po.objective.label)
    assert po.factors["candidates"] in ("published", "independent")
    objective_cfg = OmegaConf.load(CONF / "objective" / f"{objective}.yaml")
    for name in ("stage1", "stage2", "k"):
        assert po.factors[name] == objective_cfg.get(name)
    for name in ("stages", "seed"):
        assert OmegaConf.select(cfg, FACTORS[name].paths[0]) is not None


def test_duplicate_job_is_left_out_and_named(small, tmp_path):
    job = small / "negatives" / "lastfm-tiny" / "k=3,seed=0"
    shutil.copytree(job, small / "copies" / job.name)
    report = build_report(small, tmp_path / "out")
    assert len(report.study.duplicates) == 1
    t2 = pd.read_csv(report.out / "table2.csv", dtype=str)
    assert set(t2[t2["method"] == "DMPO"]["lastfm/test/gen_hr@1/n"]) == {"2"}
    text = (report.out / "report.md").read_text()
    assert "Left out `" in text and "same settings and seed as" in text
    assert "copies/k=3,seed=0" in text and "negatives/lastfm-tiny/k=3,seed=0" in text


def test_zero_shot_job_is_its_own_row_before_sft(small, tmp_path):
    """An SFT-only job that made no training step (``trainer.max_steps=0``) is reported as
    zero-shot, not as a second seed or setting of SFT."""
    config = job_config("lastfm", "dmpo", 3, 0)
    config.update(stages=["sft"], trainer={"max_steps": 0})
    res = {k: v for k, v in results(0.5, 0, 0.07).items() if k.startswith("sft:")}
    write_job(small / "zeroshot", config, res, None)
    report = build_report(small, tmp_path / "out")
    t2 = pd.read_csv(report.out / "table2.csv")
    assert list(t2["method"])[:2] == ["zero-shot", "SFT"]
    assert_cell(row(t2, method="zero-shot"), "lastfm", "gen_hr@1", 0.07, math.nan, 1)
    assert_cell(row(t2, method="SFT"), "lastfm", "gen_hr@1", 0.32, 0.0282843, 2)
    for key, value in (("sft.max_epochs", 0), ("sft.max_train_examples", 0)):
        trained = job_config("lastfm", "dmpo", 3, 0)
        section, name = key.split(".")
        trained[section][name] = value
        job = Job(tmp_path / key, OmegaConf.create(trained), results(0.5, 0, 0.3))
        assert [e.method for e in job_entries(job)] == ["zero-shot", "DMPO"]


def test_cli_writes_report_and_names_unfinished(small, tmp_path, capsys):
    assert main([str(small), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "unfinished jobs (not reported): 1" in out and "unfinished-job" in out
    text = (tmp_path / "cli" / "report.md").read_text()
    assert "Unfinished jobs (no results.json), not reported: 1: `negatives/lastfm-tiny/" in text
    assert "Made with `python -m recpo.report" in text
    # Tables 4, 6, 7 and the figures without data say why they were not made.
    for reason in ("Table 4", "Table 6", "Table 7", "Fig. 4b", "Fig. 3", "Fig. 5"):
        assert reason in out and reason in text
    assert_png(tmp_path / "cli" / "collapse_curve.png")


def test_rerun_replaces_own_files_and_keeps_user_files(small, tmp_path):
    out = tmp_path / "out"
    first = build_report(small, out)
    assert "collapse_curve.png" in first.files
    (out / "notes.md").write_text("mine")
    # One K left: the collapse curve is no longer supported and its old file goes.
    for job in (small / "negatives" / "lastfm-tiny").glob("k=15,*"):
        shutil.rmtree(job)
    second = build_report(small, out)
    assert "collapse_curve.png" not in second.files
    assert not (out / "collapse_curve.png").exists()
    assert (out / "notes.md").read_text() == "mine"


def test_user_file_in_the_way_is_not_overwritten(small, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    line = _error([str(small), "--out", str(out)], capsys)
    assert "report.md exists and was not written by recpo.report" in line
    assert (out / "report.md").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("recpo.report: error: ")
    return lines[0]


def test_no_finished_job(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no finished job" in _error([str(tmp_path / "empty")], capsys)
    write_job(tmp_path / "sweep" / "0", job_config("lastfm", "dmpo", 3, 0), None, None)
    line = _error([str(tmp_path / "sweep")], capsys)
    assert "no finished job" in line and "1 unfinished" in line
    assert "no such folder" in _error([str(tmp_path / "missing")], capsys)


def test_config_missing_a_needed_key(tmp_path, capsys):
    cfg = job_config("lastfm", "dmpo", 3, 0)
    del cfg["data"]["source"]["name"]
    write_job(tmp_path / "a" / "0", cfg, results(0.5, 0, 0.3), None)
    line = _error([str(tmp_path / "a")], capsys)
    assert "config.yaml" in line and "data.source.name" in line and "dataset" in line
    cfg = job_config("lastfm", "dmpo", 3, 0)
    del cfg["data"]["num_negatives"]
    write_job(tmp_path / "b" / "0", cfg, results(0.5, 0, 0.3), None)
    line = _error([str(tmp_path / "b")], capsys)
    assert "po.num_negatives or data.num_negatives" in line
    cfg = job_config("lastfm", "dmpo", 3, 0)
    del cfg["stages"]
    write_job(tmp_path / "c" / "0", cfg, results(0.5, 0, 0.3), None)
    line = _error([str(tmp_path / "c")], capsys)
    assert "stages is []; expected a list holding sft and/or po" in line


def test_unreadable_results_and_logs(tmp_path, capsys):
    job = write_job(tmp_path / "a" / "0", job_config("lastfm", "dmpo", 3, 0), {}, None)
    (job / "results.json").write_text("{not json")
    assert "results.json: not valid JSON" in _error([str(tmp_path / "a")], capsys)
    job = write_job(
        tmp_path / "b" / "0", job_config("lastfm", "dmpo", 3, 0), results(0.5, 0, 0.3), "x,y\n1,2\n"
    )
    assert "metrics.csv: no 'step' column" in _error([str(tmp_path / "b")], capsys)
    assert "no finished job has train metrics" in _error(
        [str(tmp_path / "b"), "--split", "train"], capsys
    )


def test_curve_refuses_to_mix_datasets_or_backbones(sweeps, tmp_path):
    study = collect(sweeps)
    dmpo15 = [
        c for c in study.conditions if c.method == "DMPO" and c.factors["num_negatives"] == 15
    ]
    assert {c.factors["dataset"] for c in dmpo15} == {"lastfm", "steam"}
    with pytest.raises(ReportError, match=r"would mix datasets \(lastfm, steam\)"):
        collapse_curve(dmpo15, [], "test", tmp_path / "x.png")
    other = job_config("lastfm", "dmpo", 15, 0)
    other["backbone"] = {"kind": "pretrained", "name": "Llama-2-7b-hf"}
    write_job(sweeps / "llama" / "0", other, results(0.5, 0, 0.3), None)
    study = collect(sweeps)
    lastfm = [
        c
        for c in study.conditions
        if c.part == "po" and c.method == "DMPO" and c.factors["dataset"] == "lastfm"
    ]
    with pytest.raises(ReportError, match=r"would mix backbones \(Llama-2-7b-hf, tiny\)"):
        win_rate_bars(lastfm, tmp_path / "y.png")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_module_entry_point_exit_code(tmp_path):
    """``python -m recpo.report`` on an empty folder: exit code 2 and one line on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "recpo.report", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"recpo.report: error: {tmp_path}: no finished job (a folder with config.yaml and "
        "results.json)"
    ]


def test_training_summary_cells(report):
    """Selected negatives 3 + step mod 2 → 3.5 (DynamicPO), k (Top-K); win rate in the
    last 20% (steps 8, 9) .85 + .01 seed → .86 ± .01 over seeds 0-2; DynamicPO's critical
    share .1 − .005 step: .095 over steps 0-2, .06 over steps 7-9; mean β .5 + .1 (step
    mod 2) + .01 seed → .56 ± .01 (DMPO logs none)."""
    frame = pd.read_csv(report.out / "training.csv", dtype={"K": str})
    dyn = row(frame, method="DynamicPO", K="3")
    assert dyn["lastfm/train/selected/mean"] == pytest.approx(3.5)
    assert dyn["lastfm/train/win_rate_last/mean"] == pytest.approx(0.86)
    assert dyn["lastfm/train/win_rate_last/std"] == pytest.approx(0.01)
    assert dyn["lastfm/train/win_rate_last/n"] == 3
    assert dyn["lastfm/train/critical_first/mean"] == pytest.approx(0.095)
    assert dyn["lastfm/train/critical_last/mean"] == pytest.approx(0.06)
    assert dyn["lastfm/train/beta/mean"] == pytest.approx(0.56)
    assert dyn["lastfm/train/beta/std"] == pytest.approx(0.01)
    dmpo = row(frame, method="DMPO", K="3")
    assert math.isnan(dmpo["lastfm/train/selected/mean"]) and dmpo["lastfm/train/selected/n"] == 0
    assert dmpo["lastfm/train/critical_last/mean"] == pytest.approx(0.18)
    assert dmpo["lastfm/train/beta/n"] == 0
    assert row(frame, method="Top-K (k=2)")["lastfm/train/selected/mean"] == pytest.approx(2.0)
    # DMPO and DynamicPO at K = 3, 15, two ablations, two Top-K; the α × γ jobs have no
    # training log, so no row.
    assert len(frame) == 8


def test_collapse_curve_draws_methods_run_at_several_k(sweeps):
    """Only DMPO and DynamicPO (α .5, γ 6) were run at K = 3 and 15; the ablations, Top-K
    and the α × γ grid ran at K = 15 only and are no curve."""
    study = collect(sweeps)
    lastfm = [c for c in study.conditions if c.part == "po" and c.factors["dataset"] == "lastfm"]
    members = curve_members(lastfm)
    assert sorted((c.method, c.factors["num_negatives"]) for c in members) == [
        ("DMPO", 3),
        ("DMPO", 15),
        ("DynamicPO", 3),
        ("DynamicPO", 15),
    ]
    assert {c.factors["alpha"] for c in members if c.method == "DynamicPO"} == {0.5}


def test_few_steps_still_fill_the_first_and_last_interval(tmp_path):
    """Four logged steps (0-3) in five intervals: middles .125, .375, .625, .875 fall in
    intervals 0, 1, 3, 4; the middle interval stays empty, the last holds step 3."""
    job = write_job(
        tmp_path / "job",
        job_config("lastfm", "dmpo", 3, 0),
        results(0.5, 0, 0.3),
        "step,train/rewards/win_rate\n0,0.1\n1,0.2\n2,0.3\n3,0.4\n",
    )
    study = collect(job)
    (cond,) = [c for c in study.conditions if c.part == "po"]
    (per_seed,) = binned(cond, "train/rewards/win_rate", 5)
    assert np.isnan(per_seed[2])
    assert np.delete(per_seed, 2) == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_collapse_curve_notes_unequal_seeds_along_a_line(small, tmp_path):
    """DMPO was run with seeds 0 and 1 at K = 3 and 15; without seed 1 at K = 15 the
    curve's two points average different seeds, and the report says so under it."""
    equal = build_report(small, tmp_path / "equal")
    assert "Unequal seeds" not in (equal.out / "report.md").read_text()
    shutil.rmtree(small / "negatives" / "lastfm-tiny" / job_name(k=15, seed=1))
    report = build_report(small, tmp_path / "unequal")
    curves = [f for f in report.figures if f.kind == "collapse_curve"]
    assert [f.name for f in curves] == ["collapse_curve.png", "collapse_curve_paired.png"]
    for curve in curves:  # the paired curve averages the same seeds
        assert curve.note == (
            "Unequal seeds along a line, so its points average different seeds: "
            "DMPO (K=3: 0, 1; K=15: 0)"
        )
    assert f"**Note.** {curves[0].note}" in (report.out / "report.md").read_text()


def test_paired_collapse_points_subtract_each_jobs_own_sft(sweeps):
    """DMPO at K = 3 on lastfm: HitRatio@1 .50/.60/.70 against SFT .30/.34/.32 of the same
    seeds → differences .20/.26/.38: mean .28, sample std .0917; rank HR@1 adds .1 to
    both sides, so the same differences."""
    cond = next(
        c
        for c in collect(sweeps).conditions
        if c.part == "po"
        and c.method == "DMPO"
        and c.factors["dataset"] == "lastfm"
        and c.factors["num_negatives"] == 3
    )
    for metric in ("gen_hr@1", "hr@1"):
        stat = paired_stat(cond, "test", metric)
        assert stat.n == 3
        assert stat.mean == pytest.approx(0.28)
        assert stat.std == pytest.approx(math.sqrt((0.08**2 + 0.02**2 + 0.10**2) / 2))


def test_code_and_stage_seeds_are_not_settings(tmp_path):
    """A job saved before data.source.reader existed, or with its seed set apart as
    po.seed, has the settings of the same job saved now."""
    old = {"data": {"source": {"format": "llara"}}, "po": {"lr": 1e-5}, "seed": 0}
    new = {
        "data": {
            "source": {"format": "llara", "reader": {"_target_": "x.read", "_partial_": True}}
        },
        "po": {"lr": 1e-5, "seed": 2},
        "seed": 0,
    }
    jobs = [Job(tmp_path / n, OmegaConf.create(c), None) for n, c in (("a", old), ("b", new))]
    assert jobs[0].settings == jobs[1].settings == {"data.source.format": "llara", "po.lr": 1e-5}
