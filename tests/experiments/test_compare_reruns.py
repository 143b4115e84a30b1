"""experiments/smollm2_study/compare_reruns.py: a rerun against the main job, row by row,
on hand-built hits files whose counts are worked out by hand."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("experiments/smollm2_study/compare_reruns.py")


def make_job(folder, sft, po):
    """A finished job whose SFT and PO models got ``sft`` and ``po`` (strings of 0/1,
    rank HR@1 only) right on rows 0..n-1."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")
    for stage, bits in (("sft", sft), ("po", po)):
        (folder / "eval" / stage).mkdir(parents=True)
        data = {"rows": list(range(len(bits))), "hr@1": bits}
        (folder / "eval" / stage / "test_hits.json").write_text(json.dumps(data))


def test_counts_by_hand(script, tmp_path):
    make_job(tmp_path / "main" / "job", sft="110010", po="101010")
    make_job(tmp_path / "rerun" / "job", sft="111000", po="101011")
    lines = script.job_lines(tmp_path / "main" / "job", tmp_path / "rerun" / "job")
    assert len(lines) == 1  # the hits hold rank HR@1 only
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    # SFT: 3 rows right in each run; rows 2 and 4 differ. PO: 3 and 4 right; row 5 differs.
    assert cells[:4] == ["`job`", "rank HR@1", "3 / 3 (2)", "3 / 4 (1)"]
    # main: PO wins row 2, loses row 1 (p = 1); rerun: PO wins rows 4 and 5, loses row 1
    # (p = 2 * P(X <= 1), X ~ Binomial(3, 1/2), = 2 * 4/8 = 1).
    assert cells[4] == "+1 / −1 (p=1)"
    assert cells[5] == "+2 / −1 (p=1)"


def test_only_jobs_in_both(script, tmp_path, monkeypatch):
    make_job(tmp_path / "main" / "a", sft="10", po="11")
    make_job(tmp_path / "rerun" / "b", sft="10", po="11")
    monkeypatch.setattr(
        "sys.argv", ["compare_reruns.py", str(tmp_path / "main"), str(tmp_path / "rerun")]
    )
    with pytest.raises(SystemExit, match="no finished job"):
        script.main()
