"""Row-level tests: per-row outcomes read from predictions or their exported form, the
exact McNemar p-value, and the report's table against hand-computed counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpo.errors import ReportError
from recpo.report import build_report
from recpo.report.rows import RowOutcomes, compare, mcnemar_exact, row_outcomes, write_hits
from tests.report.conftest import job_name
from tests.report.test_export_jobs import _export_module

TARGETS = [f"t{i}" for i in range(10)]


def write_predictions(job: Path, stage: str, rank_right: set[int], gen_right: set[int]) -> None:
    """Ten test rows (ids 100..109); row i is right when i is in the given sets."""
    folder = job / "eval" / stage
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "test_predictions.jsonl").open("w") as f:
        for i, target in enumerate(TARGETS):
            record = {
                "row": 100 + i,
                "target": target,
                "ranked_top": target if i in rank_right else "other",
                "answer": "…",
                "valid": True,
                "hit": i in gen_right,
            }
            f.write(json.dumps(record) + "\n")


def test_mcnemar_exact_by_hand():
    # 2 won, 6 lost: 2 * (C(8,0) + C(8,1) + C(8,2)) / 2^8 = 2 * 37 / 256.
    assert mcnemar_exact(2, 6) == pytest.approx(74 / 256)
    assert mcnemar_exact(6, 2) == pytest.approx(74 / 256)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)


def test_compare_counts_discordant_rows_on_common_rows_only():
    mine = RowOutcomes(np.array([1, 2, 3, 4]), {"hr@1": np.array([1, 1, 0, 0], dtype=bool)})
    theirs = RowOutcomes(np.array([4, 3, 2, 9]), {"hr@1": np.array([1, 1, 0, 1], dtype=bool)})
    test = compare(mine, theirs, "hr@1")  # common rows 2, 3, 4: won row 2, lost rows 3, 4
    assert (test.won, test.lost, test.rows) == (1, 2, 3)
    assert compare(mine, theirs, "gen_hr@1") is None


def test_hits_file_round_trip_and_bad_files(tmp_path):
    write_predictions(tmp_path, "po", {0, 1, 2}, {5})
    outcomes = row_outcomes(tmp_path, "po", "test")
    assert outcomes.rows.tolist() == list(range(100, 110))
    assert outcomes.hits["hr@1"].nonzero()[0].tolist() == [0, 1, 2]
    assert outcomes.hits["gen_hr@1"].nonzero()[0].tolist() == [5]
    write_hits(outcomes, tmp_path / "eval" / "po" / "test_hits.json")
    again = row_outcomes(tmp_path, "po", "test")  # the compact file is read first
    assert again.rows.tolist() == outcomes.rows.tolist()
    for metric in ("hr@1", "gen_hr@1"):
        assert again.hits[metric].tolist() == outcomes.hits[metric].tolist()
    (tmp_path / "eval" / "po" / "test_hits.json").write_text('{"rows": [1, 2], "hr@1": "1"}')
    with pytest.raises(ReportError, match="test_hits.json: hr@1 has 1 rows, 'rows' has 2"):
        row_outcomes(tmp_path, "po", "test")
    (tmp_path / "eval" / "po" / "test_hits.json").unlink()
    with (tmp_path / "eval" / "po" / "test_predictions.jsonl").open("a") as f:
        f.write('{"target": "x"}\n')
    with pytest.raises(ReportError, match="test_predictions.jsonl, line 11: expected a prediction"):
        row_outcomes(tmp_path, "po", "test")


def _with_predictions(sweeps: Path) -> Path:
    """Seed 0 at K = 15: SFT right on rows 0-7 (rank) / 0-3 (generation), DMPO on
    rank rows 0-5 and 8 (won 1, lost 2 against SFT) and generation rows 0-3, DynamicPO
    on rank rows 0-1 and 8-9 (won 2, lost 6 against SFT; won 1, lost 4 against DMPO)
    and generation rows 0-4 (won 1 against SFT and DMPO)."""
    base = sweeps / "negatives" / "lastfm-tiny"
    for objective, rank, gen in (
        ("dmpo", {0, 1, 2, 3, 4, 5, 8}, {0, 1, 2, 3}),
        ("dynamicpo", {0, 1, 8, 9}, {0, 1, 2, 3, 4}),
    ):
        job = base / job_name(objective=objective, **{"data.num_negatives": 15}, seed=0)
        write_predictions(job, "sft", set(range(8)), {0, 1, 2, 3})
        write_predictions(job, "po", rank, gen)
    return sweeps


def _cells(frame: pd.DataFrame, method: str, minus: str) -> list[str]:
    row = frame[(frame["method"] == method) & (frame["minus"] == minus)]
    assert len(row) == 1, row
    return [row.iloc[0][c] for c in frame.columns if "won / lost" in c]


@pytest.mark.parametrize("exported", [False, True])
def test_row_test_table_cells(sweeps, tmp_path, exported):
    root = _with_predictions(sweeps)
    if exported:  # the report of exported jobs reads the compact files
        _export_module().export(root, tmp_path / "jobs")
        root = tmp_path / "jobs"
        assert not list(root.rglob("*_predictions.jsonl")) and list(root.rglob("*_hits.json"))
    report = build_report(root, tmp_path / "out")
    frame = pd.read_csv(report.out / "row_tests.csv", dtype=str)
    lastfm = frame[frame["dataset"] == "lastfm"] if "dataset" in frame else frame
    assert len(lastfm) == 3 and set(lastfm["seed"]) == {"0"} and set(lastfm["rows"]) == {"10"}
    assert set(lastfm["K"]) == {"15"}
    p = f"{74 / 256:.2g}"
    assert _cells(lastfm, "DMPO", "SFT") == ["+1 / −2 (p=1)", "+0 / −0 (p=1)"]
    assert _cells(lastfm, "DynamicPO", "SFT") == [f"+2 / −6 (p={p})", "+1 / −0 (p=1)"]
    assert _cells(lastfm, "DynamicPO", "DMPO") == [
        f"+1 / −4 (p={mcnemar_exact(1, 4):.2g})",
        "+1 / −0 (p=1)",
    ]
    assert "**Row-level tests**" in (report.out / "report.md").read_text()


def test_ablation_is_tested_row_by_row_against_the_full_method(sweeps, tmp_path):
    root = _with_predictions(sweeps)
    ablation = (
        root / "ablations" / "lastfm-tiny" / job_name(**{"objective.stage1": "false"}, seed=0)
    )
    write_predictions(ablation, "sft", set(range(8)), {0, 1, 2, 3})
    # full DynamicPO (seed 0, K = 15) is right on rank rows {0, 1, 8, 9}: won 2, 3, 4, lost 9
    write_predictions(ablation, "po", {0, 1, 2, 3, 4, 8}, {0, 1, 2, 3, 4})
    frame = pd.read_csv(build_report(root, tmp_path / "out").out / "row_tests.csv", dtype=str)
    assert _cells(frame, "DynamicPO w/o Stage (I)", "DynamicPO") == [
        f"+3 / −1 (p={mcnemar_exact(3, 1):.2g})",
        "+0 / −0 (p=1)",
    ]
    # against its SFT model (rank rows 0-7): won 8, lost 5, 6, 7
    assert _cells(frame, "DynamicPO w/o Stage (I)", "SFT") == [
        f"+1 / −3 (p={mcnemar_exact(1, 3):.2g})",
        "+1 / −0 (p=1)",
    ]


def test_row_test_table_skipped_without_predictions(sweeps, tmp_path):
    report = build_report(sweeps, tmp_path / "out")
    assert not (report.out / "row_tests.csv").exists()
    assert any(
        "Row-level tests skipped: no job has per-row predictions" in s for s in report.skipped
    )
