"""experiments/lastfm_smollm2/invalid_answers.py: each class of invalid answer by hand,
and the table it prints for a predictions file on the generated synthetic data."""

from __future__ import annotations

import json

import pytest

from recpo.data.shortcut import load_run_split
from tests.conftest import load_script


def write_predictions(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def script():
    return load_script("experiments/lastfm_smollm2/invalid_answers.py")


def test_classes_by_hand(script):
    history = ["Muse", "Queen"]
    candidates = ["Arctic Monkeys", "Mind.in.a.box", "The Stills"]
    catalogue = {"Muse", "Queen", "Coldplay", *candidates}

    def kind(answer):
        return script.classify(answer, history, candidates, catalogue)

    assert kind(" \n") == "empty"
    assert kind(" Queen") == "history"
    assert kind(" Arctic") == "prefix"
    assert kind(" The Stills, Black Stone Cherry") == "candidate+"
    assert kind(" Coldplay") == "catalogue"
    assert kind(" arctic monkees") == "near"  # ratio 0.93 after case folding
    assert kind(" Scott Scott Scott") == "other"


def test_table_for_a_predictions_file(script, tmp_path, capsys):
    overrides = ["data=synthetic", f"paths.cache_dir={tmp_path / 'cache'}"]
    ds, rows = load_run_split(overrides, "test")
    names = ds.catalog.names
    records = [
        {"row": rows[0].row, "answer": " " + names[rows[0].target], "valid": True},
        {"row": rows[1].row, "answer": "", "valid": False},
        {"row": rows[2].row, "answer": " " + names[rows[2].candidates[0]][:3], "valid": False},
    ]
    path = tmp_path / "test_predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert script.main([str(path), "--", *overrides]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # rows 3, invalid 2: one empty, one prefix
    assert line == f"| {path} | 3 | 2 | 1 | 0 | 1 | 0 | 0 | 0 | 0 |"


def test_a_row_outside_the_split_is_named(script, tmp_path, capsys):
    path = tmp_path / "test_predictions.jsonl"
    path.write_text(json.dumps({"row": -5, "answer": "x", "valid": False}) + "\n")
    overrides = ["data=synthetic", f"paths.cache_dir={tmp_path / 'cache'}"]
    assert script.main([str(path), "--", *overrides]) == 2
    assert "row -5 is not in the test split" in capsys.readouterr().out


def test_validity_against_the_first_file(script, tmp_path, capsys):
    overrides = ["data=synthetic", f"paths.cache_dir={tmp_path / 'cache'}"]
    _, rows = load_run_split(overrides, "test")
    flags = {
        "sft": [True] * 5 + [False],
        "po1": [False] * 6,  # 5 rows became invalid, none valid
        "po2": [True] * 5 + [False],  # no change
    }
    paths = []
    for name, valid in flags.items():
        records = [{"row": ex.row, "answer": "", "valid": ok} for ex, ok in zip(rows, valid)]
        paths.append(write_predictions(tmp_path / name / "test_predictions.jsonl", records))
    assert script.main([*map(str, paths), "--", *overrides]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # exact McNemar, 5 against 0: p = 2 / 2**5 = 0.0625; Holm over 2 files: 0.125, then 1
    assert lines[-2] == f"| {paths[1]} | 5 | 0 | 0.0625 | 0.125 |"
    assert lines[-1] == f"| {paths[2]} | 0 | 0 | 1 | 1 |"
    assert script.validity_changes({1: True, 2: False}, {1: False, 2: True}) == (1, 1)


def test_files_with_other_rows_are_named(script, tmp_path, capsys):
    overrides = ["data=synthetic", f"paths.cache_dir={tmp_path / 'cache'}"]
    _, rows = load_run_split(overrides, "test")
    paths = []
    for name, n in (("sft", 3), ("po", 2)):
        records = [{"row": ex.row, "answer": "x", "valid": True} for ex in rows[:n]]
        paths.append(write_predictions(tmp_path / name / "test_predictions.jsonl", records))
    assert script.main([*map(str, paths), "--", *overrides]) == 2
    assert f"{paths[1]}: not the same rows as {paths[0]}" in capsys.readouterr().out
