"""Holm's correction and the seed-level tests against hand-computed values, and their
columns in the report's row-test and paired tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from recpo.report.build import build_report
from recpo.report.rows import mcnemar_exact
from recpo.report.stats import holm, seed_tests, student_t_two_sided
from tests.report.conftest import make_sweeps
from tests.report.test_report import row
from tests.report.test_row_tests import _with_predictions


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory):
    root = make_sweeps(tmp_path_factory.mktemp("hand") / "multirun")
    return build_report(root, root.parent / "out")


def test_holm_by_hand():
    """p = (.01, .04, .03, .005), m = 4. Sorted: .005, .01, .03, .04; times m, m-1, ...:
    .02, .03, .06, .04; running maximum: .02, .03, .06, .06; back in the given order:
    (.03, .06, .06, .02)."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1: (.5 * 2, max(1, .6 * 1))
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]) == []


def test_holm_rejects_a_value_outside_0_1():
    with pytest.raises(ValueError, match="p-value"):
        holm([0.1, 1.5])


def test_student_t_by_hand():
    """Two-sided p of Student's t:
    df = 1, t = 1: 1 - (2/π) atan(1) = 0.5;
    df = 2, t = 3.34: 1 - 3.34 / sqrt(2 + 3.34²) = 1 - 3.34 / 3.627065 = 0.079145;
    df = 3, t = sqrt(3): θ = π/4, 1 - (2/π)(π/4 + sin θ cos θ) = 0.5 - 1/π = 0.181690;
    df = 4, t = 2: θ = π/4, 1 - sin θ (1 + cos²θ / 2) = 1 - 0.707107 · 1.25 = 0.116117."""
    assert student_t_two_sided(1.0, 1) == pytest.approx(0.5, abs=1e-9)
    assert student_t_two_sided(3.34, 2) == pytest.approx(0.079145, abs=1e-6)
    assert student_t_two_sided(-3.34, 2) == pytest.approx(0.079145, abs=1e-6)
    assert student_t_two_sided(math.sqrt(3), 3) == pytest.approx(0.5 - 1 / math.pi, abs=1e-9)
    assert student_t_two_sided(2.0, 4) == pytest.approx(1 - math.sqrt(0.5) * 1.25, abs=1e-9)
    assert student_t_two_sided(0.0, 5) == pytest.approx(1.0)
    assert student_t_two_sided(math.inf, 2) == 0.0
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_two_sided(1.0, 0)


def test_student_t_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 8, 13):
        for t in (0.3, 1.1, 2.5, 6.0):
            assert student_t_two_sided(t, df) == pytest.approx(2 * stats.t.sf(t, df), abs=1e-12)


def test_seed_tests_by_hand():
    """Differences (.002, .004, .006): mean .004, sample std .002, t = .004 / (.002 / √3)
    = 2√3 = 3.4641, df = 2: p = 1 - 2√3 / √(2 + 12) = 0.074180; sign: 3 above, 0 below,
    p = 2 · (1/2)³ = 0.25."""
    tests = seed_tests([0.002, 0.004, 0.006])
    assert tests.n == 3
    assert tests.t == pytest.approx(2 * math.sqrt(3))
    assert tests.p_t == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-9)
    assert (tests.positive, tests.negative) == (3, 0)
    assert tests.p_sign == pytest.approx(0.25)
    # (.01, -.01, 0): mean 0, t = 0, p = 1; sign drops the zero: 1 vs 1, p = 1
    even = seed_tests([0.01, -0.01, 0.0])
    assert even.t == pytest.approx(0.0) and even.p_t == pytest.approx(1.0)
    assert (even.positive, even.negative, even.p_sign) == (1, 1, 1.0)
    # the same non-zero difference in every seed: no spread, t infinite, the t-test
    # undefined (NaN, left out of Holm); the sign test still counts 3 / 0
    same = seed_tests([0.001, 0.001, 0.001])
    assert same.t == math.inf and math.isnan(same.p_t)
    assert same.p_sign == pytest.approx(0.25)
    # equal up to rounding counts as equal
    assert math.isnan(seed_tests([0.3 - 0.1, 0.2, 0.1 + 0.1]).p_t)
    assert seed_tests([0.3]) is None and seed_tests([]) is None


def test_row_tests_carry_holm_within_each_family(sweeps, tmp_path):
    """Each row test's Holm p is Holm over the p-values of its family: the tests against
    the same reference on the same dataset, both metrics."""
    report = build_report(_with_predictions(sweeps), tmp_path / "out")
    frame = pd.read_csv(report.out / "row_tests.csv", dtype=str)
    won_lost = [c for c in frame.columns if "won / lost" in c]
    assert all(f"{c.split(' won')[0]} p Holm" in frame.columns for c in won_lost)

    def p_of(text: str) -> float:
        won, lost = (int(x.strip("+−")) for x in text.split(" (")[0].split(" / "))
        return mcnemar_exact(won, lost)

    for family, members in frame.groupby("Holm family (tests)"):
        cells = [(i, c) for i in members.index for c in won_lost if frame.at[i, c] != "–"]
        assert family.endswith(f"({len(cells)})")
        expected = holm([p_of(frame.at[i, c]) for i, c in cells])
        for (i, c), value in zip(cells, expected, strict=True):
            got = float(frame.at[i, f"{c.split(' won')[0]} p Holm"])
            assert got == pytest.approx(value, rel=0.05)  # shown to 2 significant digits
    # DynamicPO - DMPO on lastfm, K = 15, seed 0: rank +1/-4 (p = .375) and HitRatio@1
    # +1/-0 (p = 1) are the family's only tests: Holm gives 2 · .375 = .75 and 1.
    dyn = frame[(frame["method"] == "DynamicPO") & (frame["minus"] == "DMPO")]
    dyn = dyn[dyn["dataset"] == "lastfm"] if "dataset" in dyn else dyn
    assert list(dyn["rank HR@1 p Holm"]) == ["0.75"] and list(dyn["HitRatio@1 p Holm"]) == ["1"]
    assert "Holm family" in (report.out / "row_tests.md").read_text()


def test_paired_table_carries_seed_level_tests(hand_report):
    """DynamicPO - DMPO, lastfm, K = 15, HitRatio@1: differences (.30, .32, .22) (conftest),
    mean .28, variance .0028, t² = .28² · 3 / .0028 = 84, df = 2: p = 1 - √(84/86) =
    0.011696; sign 3 / 0, p = .25. Its Holm p is Holm over the paired-t p-values of
    every cell against DMPO on lastfm."""
    paired = pd.read_csv(hand_report.out / "paired.csv", dtype=str)
    k15 = row(paired, method="DynamicPO", minus="DMPO", K="15", **{"α": "0.5", "γ": "6"})
    base = "lastfm/test/gen_hr@1"
    assert float(k15[f"{base}/t"]) == pytest.approx(math.sqrt(84), rel=1e-6)
    assert float(k15[f"{base}/p_t"]) == pytest.approx(1 - math.sqrt(84 / 86), rel=1e-6)
    assert (float(k15[f"{base}/sign_pos"]), float(k15[f"{base}/sign_neg"])) == (3, 0)
    assert float(k15[f"{base}/p_sign"]) == pytest.approx(0.25)
    family = paired[paired["minus"] == "DMPO"]
    ps = [
        float(family.at[i, c])
        for i in family.index
        for c in family.columns
        if c.startswith("lastfm/") and c.endswith("/p_t") and family.at[i, c] == family.at[i, c]
    ]
    ps = [p for p in ps if not math.isnan(p)]
    expected = holm(ps)[ps.index(float(k15[f"{base}/p_t"]))]
    assert float(k15[f"{base}/p_t_holm"]) == pytest.approx(expected, rel=1e-9)
    assert "t p=" in (hand_report.out / "paired.md").read_text()


def test_tables_name_the_candidate_protocol(hand_report):
    text = (hand_report.out / "report.md").read_text()
    assert "Candidate lists (`data.candidates`)" in text
    assert (
        "Candidate lists (`data.candidates`): published"
        in (hand_report.out / "table2.md").read_text()
    )


def test_claim_table_pools_each_seed_over_k(hand_report):
    """DynamicPO - DMPO on lastfm, HitRatio@1, pooled over K = 3 and 15 (conftest): per
    seed K = 3 gives (.05, .05, -.10) and K = 15 (.30, .32, .22), so the seed means are
    (.175, .185, .06): mean .14, variance (.035² + .045² + .08²) / 2 = .004825,
    t = .14 / sqrt(.004825 / 3) = 3.4909, df = 2, p = 1 - t / sqrt(2 + t²) = 0.0732;
    sign 3 / 0, p = .25."""
    claims = pd.read_csv(hand_report.out / "claim_tests.csv", dtype=str)
    dyn = claims[(claims["method"] == "DynamicPO") & (claims["minus"] == "DMPO")]
    dyn = dyn[dyn["dataset"] == "lastfm"] if "dataset" in dyn else dyn
    # the one-seed α × γ grid is its own claim row (no test with one seed)
    grid = dyn[dyn["seeds"] == "1"]
    assert len(grid) == 1 and grid.iloc[0]["HitRatio@1 sign"] == "–"
    assert grid.iloc[0]["pooled over"] == "α = 0.1, 0.9; γ = 2, 10"
    dyn = dyn[dyn["seeds"] == "3"]
    assert len(dyn) == 1
    got = dyn.iloc[0]
    assert got["pooled over"] == "K = 3, 15" and got["seeds"] == "3"
    assert float(got["HitRatio@1 mean"]) == pytest.approx(0.14, abs=1e-4)
    t = 0.14 / math.sqrt(0.004825 / 3)
    p = 1 - t / math.sqrt(2 + t * t)
    text = got["HitRatio@1 t p (Holm)"]
    assert text.startswith(f"t(2) = {t:.2f}, p={p:.2g} (")
    assert got["HitRatio@1 sign"] == "+3/−0 p=0.25"
