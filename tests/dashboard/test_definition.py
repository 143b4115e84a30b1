"""The dashboard definition: built and serialised without a W&B key, its layout read
from the settings that vary, and every key it reads one that a demo run logs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from recpo import metric_names as names
from recpo.dashboard.__main__ import main
from recpo.dashboard.definition import Definition, Layout, used_keys
from tests.training.test_wandb_runs import read_run

pytest.importorskip("wandb_workspaces")

DMPO = "recpo.objectives.losses.dmpo"
DYNAMICPO = "recpo.objectives.plugin.dynamicpo"


def settings(**values) -> dict:
    base = {
        "dataset": "lastfm",
        "backbone": "tiny",
        "candidates": "published",
        "num_negatives": 3,
        "objective": DMPO,
        "stage1": None,
        "stage2": None,
        "dynamic_beta": None,
        "alpha": None,
        "gamma": None,
        "k": None,
        "seed": 0,
    }
    return {**base, **values}


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_layout_follows_the_varied_settings():
    """A negatives sweep on one dataset: a section per K, series per objective; seeds
    never split a series, nor do the settings only DynamicPO has (α, γ, switches)."""
    dynamicpo = {"alpha": 0.5, "gamma": 6.0, "stage1": True, "stage2": True, "dynamic_beta": True}
    runs = [
        settings(num_negatives=k, objective=o, seed=s, **(dynamicpo if o == DYNAMICPO else {}))
        for k in (15, 1, 3)
        for o in (DMPO, DYNAMICPO)
        for s in (0, 1)
    ]
    layout = Layout.from_settings(runs)
    assert layout.facets == ("num_negatives",)
    assert layout.sections == ((1,), (3,), (15,))
    assert layout.series == ("objective",)
    assert layout.table == ("objective", "num_negatives", "alpha", "gamma", "seed", "candidates")


def test_layout_splits_datasets_and_groups_alpha():
    """Two datasets and two α: a section per (dataset, K), α joins the series and the
    table; the backbone, shared, does neither."""
    runs = [
        settings(dataset=d, alpha=a, objective=DYNAMICPO, num_negatives=k)
        for d in ("steam", "lastfm")
        for a in (0.9, 0.1)
        for k in (3, 7)
    ]
    layout = Layout.from_settings(runs)
    assert layout.facets == ("dataset", "num_negatives")
    assert layout.sections == (("lastfm", 3), ("lastfm", 7), ("steam", 3), ("steam", 7))
    assert layout.series == ("objective", "alpha")
    assert "dataset" in layout.table and "backbone" not in layout.table
    with pytest.raises(ValueError, match="no preference-optimization runs"):
        Layout.from_settings([])


def test_definition_round_trips_without_a_key(tmp_path):
    runs = [settings(num_negatives=k, objective=o) for k in (1, 3) for o in (DMPO, DYNAMICPO)]
    built = Definition.build(Layout.from_settings(runs), "ent", "proj", "negatives/lastfm")
    path = built.write(tmp_path / "dashboard.json")
    data = json.loads(path.read_text())
    assert data["format"] == "recpo-dashboard/1"
    assert (data["entity"], data["project"], data["group"]) == ("ent", "proj", "negatives/lastfm")

    loaded = Definition.read(path)
    assert loaded.to_json() == built.to_json()
    assert used_keys(loaded) == used_keys(built)

    workspace = loaded.workspace
    assert (workspace.entity, workspace.project) == ("ent", "proj")
    assert [s.name for s in workspace.sections] == [
        "Reward win rate (Fig. 4b)",
        "Reward margin and accuracy",
        "Boundary shares (Fig. 3)",
        "Selected negatives and β",
        "Validation",
        "Test metrics",
    ]
    (win_rate,) = workspace.sections[0].panels
    assert [m.name for m in win_rate.y] == ["train/rewards/win_rate"]
    assert win_rate.x.name == "trainer/global_step"
    assert win_rate.smoothing_type == "exponential" and 0 < win_rate.smoothing_factor < 1
    assert (win_rate.groupby_aggfunc, win_rate.groupby_rangefunc) == ("mean", "stddev")
    settings_ = workspace.runset_settings
    assert settings_.filters == (
        "Metric(\"JobType\") == 'po' and Metric(\"Group\") == 'negatives/lastfm'"
    )
    assert [g.name for g in settings_.groupby] == ["po.num_negatives", "objective._target_"]
    assert settings_.pinned_columns[:7] == [
        "run:displayName",
        "config:objective.value._target_",
        "config:po.value.num_negatives",
        "config:objective.value.alpha",
        "config:objective.value.gamma",
        "config:po.value.seed",  # the PO stage's seed (the run seed unless set apart)
        "config:data.value.candidates",
    ]
    assert settings_.pinned_columns[7:] == [
        f"summary:{prefix}test/{m}"
        for prefix in ("", "sft/")
        for m in ("gen_hr@1", "valid_ratio", "hr@1", "hr@5", "ndcg@5")
    ]

    blocks = loaded.report.blocks
    headings = [b.text for b in blocks if type(b).__name__ == "H2"]
    assert headings == [
        "K = 1",
        "K = 3",
        "Test metrics (preference stage, its SFT model beside it)",
    ]
    grids = [b for b in blocks if type(b).__name__ == "PanelGrid"]
    (k1,) = grids[0].runsets
    assert k1.filters == (
        "Metric(\"JobType\") == 'po' and Metric(\"Group\") == 'negatives/lastfm' "
        'and Config("po.num_negatives") == 1'
    )
    assert k1.groupby == ["config.objective.value._target_"]
    assert len(grids[0].panels) == 9
    assert grids[-1].runsets[0].pinned_columns == settings_.pinned_columns


def _csv_columns(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return set(next(csv.reader(f)))


def test_every_key_is_one_a_demo_run_logs(wandb_sweep, tmp_path, capsys):
    """The definition of the 2-job demo sweep (K = 2, 3): each line plot's metric is in
    both the CSV log and the W&B history of every preference run, each summary column
    in its W&B summary, each config path in its W&B config; one section per K."""
    sweep = wandb_sweep / "multirun" / "wb"
    out = tmp_path / "dashboard.json"
    assert main([str(sweep), "--entity", "ent", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"python -m recpo.dashboard --push {out}" in printed
    definition = Definition.read(out)
    assert (definition.project, definition.group) == ("recpo", "wb")
    keys = used_keys(definition)
    axes = {names.STEP, names.EPOCH}
    assert axes <= keys["history"]
    assert names.train_key(names.REWARD_WIN_RATE) in keys["history"]

    po_runs = []
    for job in sorted(p.parent for p in sweep.rglob("results.json")):
        (run,) = [
            r
            for r in map(read_run, (job / "wandb").glob("offline-run-*/run-*.wandb"))
            if r["run"].job_type == "po"
        ]
        po_runs.append(run)
        logged = {k for row in run["history"] for k in row}
        assert keys["history"] <= logged, keys["history"] - logged
        columns = _csv_columns(job / "logs" / "po" / "metrics.csv")
        assert keys["history"] - axes <= columns, keys["history"] - axes - columns
        assert keys["summary"] <= set(run["summary"]), keys["summary"] - set(run["summary"])
        for path in keys["config"]:
            node = run["config"]
            for part in path.split("."):
                assert part in node, (path, part)
                node = node[part]
    # Sections and grouping follow the sweep: K varies, the objective does not.
    headings = [b.text for b in definition.report.blocks if type(b).__name__ == "H2"]
    assert headings[:-1] == ["K = 2", "K = 3"]
    assert sorted(r["config"]["po"]["num_negatives"] for r in po_runs) == [2, 3]
    assert {r["run"].run_group for r in po_runs} == {definition.group}


def test_command_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    assert main([str(tmp_path)]) == 2
    assert "no W&B entity" in capsys.readouterr().err
    assert main([str(tmp_path), "--entity", "e"]) == 2
    assert "no job with a preference stage" in capsys.readouterr().err
    assert main(["--entity", "e"]) == 2
    assert "set WANDB_API_KEY" in capsys.readouterr().err
    assert main(["--push", str(tmp_path / "d.json")]) == 2
    assert "--push needs WANDB_API_KEY" in capsys.readouterr().err


def test_push_saves_both_and_prints_their_urls(tmp_path, monkeypatch, capsys):
    """``--push``: the written workspace and report are saved (W&B's API stood in for);
    the report's run sets get the project only then."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    saved = []

    def save_workspace(self):
        saved.append(("workspace", self.entity, self.project, self.name))
        return self

    def save_report(self, draft=False, clone=False):
        projects = {(r.entity, r.project) for b in self.blocks for r in getattr(b, "runsets", [])}
        saved.append(("report", self.entity, self.project, projects))
        return self

    monkeypatch.setattr(ws.Workspace, "save", save_workspace)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: "https://w/ws"))
    monkeypatch.setattr(wr.Report, "save", save_report)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "https://w/report"))
    runs = [settings(num_negatives=k) for k in (1, 3)]
    path = Definition.build(Layout.from_settings(runs), "ent", "proj", "g", "mine").write(
        tmp_path / "d.json"
    )
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert main(["--push", str(path)]) == 0
    assert saved == [
        ("workspace", "ent", "proj", "mine"),
        ("report", "ent", "proj", {("ent", "proj")}),
    ]
    assert capsys.readouterr().out.splitlines() == [
        "workspace: https://w/ws",
        "report: https://w/report",
    ]


def test_settings_from_wandb_without_a_folder(tmp_path, monkeypatch, capsys):
    """Without PATH the preference runs of the group are read from W&B (its API stood
    in for): their configs give the sections."""
    import wandb

    from recpo.dashboard import definition

    class Run:
        def __init__(self, k):
            self.config = {
                "po": {"num_negatives": k},
                "objective": {"_target_": DMPO},
                "data": {"source": {"name": "lastfm"}, "candidates": "published"},
                "backbone": {"name": "tiny"},
                "seed": 0,
            }

    asked = []

    class Api:
        def runs(self, path, filters):
            asked.append((path, filters))
            return [Run(7), Run(1)]

    monkeypatch.setattr(wandb, "Api", Api)
    monkeypatch.setattr(definition.Definition, "save", lambda self: ("u1", "u2"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    out = tmp_path / "d.json"
    args = ["--entity", "ent", "--project", "proj", "--group", "g", "--out", str(out)]
    assert main(args) == 0
    assert asked == [("ent/proj", {"jobType": "po", "group": "g"})]
    headings = [b.text for b in Definition.read(out).report.blocks if type(b).__name__ == "H2"]
    assert headings[:-1] == ["K = 1", "K = 7"]
    assert "workspace: u1" in capsys.readouterr().out
