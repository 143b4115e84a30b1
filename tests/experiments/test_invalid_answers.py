"""experiments/lastfm_smollm2/invalid_answers.py: each class of invalid answer by hand,
and the table it prints for a predictions file on the generated synthetic data."""

from __future__ import annotations

import json

import pytest

from recpo.data.shortcut import load_run_split
from tests.conftest import load_script


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
