"""Row-level comparisons: which test rows each model gets right, and exact McNemar
tests between two models evaluated on the same rows.

A difference of a few rows out of thousands can be noise or a consistent effect; the
paired table's means cannot tell. For two models on the same rows only the discordant
rows carry information: ``won`` (this model right, the other wrong) and ``lost``. Under
"no difference" each discordant row is a fair coin, so the two-sided p-value is
``min(1, 2 * P(X <= min(won, lost)))`` with ``X ~ Binomial(won + lost, 1/2)``.

Per-row outcomes come from a job's ``eval/<stage>/<split>_predictions.jsonl`` or, in an
exported job (``scripts/export_jobs.py``), from the compact ``<split>_hits.json``
written from it: ``{"rows": [row ids], "hr@1": "0110...", "gen_hr@1": "..."}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recpo.errors import ReportError

# The metrics a prediction record says a row got right: ranking (``ranked_top`` equals
# the target) and generation (``hit``).
ROW_METRICS = ("hr@1", "gen_hr@1")


@dataclass(frozen=True)
class RowOutcomes:
    """Which rows of one split a model got right, per metric."""

    rows: np.ndarray  # (n,) row ids
    hits: dict[str, np.ndarray]  # metric -> (n,) bool


def hits_path(job: Path, stage: str, split: str) -> Path:
    return job / "eval" / stage / f"{split}_hits.json"


def _from_predictions(path: Path) -> RowOutcomes:
    rows, hits = [], {m: [] for m in ROW_METRICS}
    with path.open() as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                rows.append(int(record["row"]))
                if "ranked_top" in record:
                    hits["hr@1"].append(record["ranked_top"] == record["target"])
                if "hit" in record:
                    hits["gen_hr@1"].append(bool(record["hit"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ReportError(
                    f"{path}, line {number}: expected a prediction record with 'row' and "
                    f"'target' ({err!r})"
                ) from None
    kept = {m: np.array(v, dtype=bool) for m, v in hits.items() if len(v) == len(rows)}
    return RowOutcomes(np.array(rows, dtype=np.int64), kept)


def _from_hits(path: Path) -> RowOutcomes:
    try:
        data = json.loads(path.read_text())
        rows = np.array(data["rows"], dtype=np.int64)
        hits = {
            m: np.array([c == "1" for c in data[m]], dtype=bool) for m in ROW_METRICS if m in data
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ReportError(
            f"{path}: expected {{'rows': [...], 'hr@1': '0110...'}} ({err!r})"
        ) from None
    for metric, values in hits.items():
        if len(values) != len(rows):
            raise ReportError(f"{path}: {metric} has {len(values)} rows, 'rows' has {len(rows)}")
    return RowOutcomes(rows, hits)


def row_outcomes(job: Path, stage: str, split: str) -> RowOutcomes | None:
    """The per-row outcomes of ``stage`` on ``split`` in the job folder, or None."""
    compact = hits_path(job, stage, split)
    if compact.is_file():
        return _from_hits(compact)
    predictions = job / "eval" / stage / f"{split}_predictions.jsonl"
    if predictions.is_file():
        return _from_predictions(predictions)
    return None


def write_hits(outcomes: RowOutcomes, path: Path) -> None:
    """The compact form of ``outcomes`` (a few kB for thousands of rows)."""
    data: dict[str, object] = {"rows": outcomes.rows.tolist()}
    for metric, values in outcomes.hits.items():
        data[metric] = "".join("1" if v else "0" for v in values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) + "\n")


def mcnemar_exact(won: int, lost: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    n = won + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(won, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class RowTest:
    won: int
    lost: int
    rows: int  # rows compared

    @property
    def p(self) -> float:
        return mcnemar_exact(self.won, self.lost)

    def text(self) -> str:
        return f"+{self.won} / −{self.lost} (p={self.p:.2g})"


def compare(mine: RowOutcomes, theirs: RowOutcomes, metric: str) -> RowTest | None:
    """Discordant rows of ``mine`` against ``theirs`` on the rows both evaluated, or
    None when either lacks the metric or they share no row."""
    if metric not in mine.hits or metric not in theirs.hits:
        return None
    common, i, j = np.intersect1d(mine.rows, theirs.rows, return_indices=True)
    if not len(common):
        return None
    a, b = mine.hits[metric][i], theirs.hits[metric][j]
    return RowTest(int((a & ~b).sum()), int((~a & b).sum()), len(common))
