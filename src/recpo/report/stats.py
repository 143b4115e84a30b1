"""Tests behind the report's verdicts: Holm's correction over a family of p-values, and
seed-level tests of a paired difference (paired t over seeds, sign test over seeds).

Row-level McNemar tests (:mod:`recpo.report.rows`) count rows; a study runs dozens of
them (seeds × settings × comparisons × metrics) on the same rows and shared SFT models,
so a few fall below 0.05 by chance. Holm's step-down procedure controls the chance of
any false rejection in a family under every dependence between the tests. The seed-level
tests ask the other question: does the difference repeat across independently trained
seeds, each seed one observation. :class:`Stat` is what every table cell shows: mean ± std
over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from recpo.report.rows import mcnemar_exact


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof 1; NaN below two values) of n values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, 0)
        arr = np.asarray(values, dtype=float)
        return cls(float(arr.mean()), float(arr.std(ddof=1)) if n > 1 else math.nan, n)

    def text(self) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.4f} (n=1)"
        return f"{self.mean:.4f} ± {self.std:.4f} (n={self.n})"

    def columns(self) -> dict[str, float]:
        """CSV cells besides mean, std and n (none; a paired difference adds its tests)."""
        return {}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of
    p_(i) is ``max over j <= i of min(1, (m - j + 1) * p_(j))``; a test is rejected at
    level a when its adjusted value is <= a.
    """
    m = len(pvalues)
    for p in pvalues:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"a p-value must lie in [0, 1], got {p}")
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def holm_by_family(tests: Iterable[tuple[Hashable, Hashable, float]]) -> dict[Hashable, float]:
    """Each test's Holm-adjusted p within its family; ``tests`` are (family, key, p)."""
    families: dict[Hashable, list[tuple[Hashable, float]]] = {}
    for family, key, p in tests:
        families.setdefault(family, []).append((key, p))
    adjusted = {}
    for members in families.values():
        keys = [key for key, _ in members]
        adjusted.update(zip(keys, holm([p for _, p in members]), strict=True))
    return adjusted


def student_t_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with an integer ``df`` >= 1.

    Uses the finite series of the t distribution for integer degrees of freedom: with
    θ = atan(|t| / sqrt(df)) and c = cos²θ, P(|T| < |t|) is
    ``sinθ · (1 + c/2 + (1·3)/(2·4) c² + ... + (1·3···(df-3))/(2·4···(df-2)) c^((df-2)/2))``
    for even df, and
    ``(2/π) · (θ + sinθ cosθ · (1 + (2/3) c + (2·4)/(3·5) c² + ... up to c^((df-3)/2)))``
    for odd df (the bracket is absent for df = 1).
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2 == 0:
        for j in range(1, df // 2):
            term *= c * (2 * j - 1) / (2 * j)
            total += term
        inside = s * total
    else:
        if df > 1:
            for j in range(1, (df - 1) // 2):
                term *= c * (2 * j) / (2 * j + 1)
                total += term
            inside = 2 / math.pi * (theta + s * math.cos(theta) * total)
        else:
            inside = 2 / math.pi * theta
    return min(1.0, max(0.0, 1.0 - inside))


# A spread of per-seed differences at or below this is none: metric differences are
# multiples of 1 / rows (>= 1e-5), rounding of equal differences leaves ~1e-17.
NO_SPREAD = 1e-12


@dataclass(frozen=True)
class SeedTests:
    """Seed-level tests of one paired difference (one value per seed).

    Attributes:
        n: Seeds.
        t: Paired t statistic, mean / (sample std / sqrt(n)); ±inf when every seed
            gives the same non-zero difference, 0 when every difference is 0.
        p_t: Two-sided p of ``t`` with n - 1 degrees of freedom; NaN when every seed
            gives the same non-zero difference (no spread: the t-test is undefined, and
            a discrete metric makes this happen, e.g. each seed losing the same 2 rows).
        positive: Seeds with a difference above 0.
        negative: Seeds with a difference below 0 (seeds at exactly 0 are dropped).
        p_sign: Two-sided exact sign test, Binomial(positive + negative, 1/2).
    """

    n: int
    t: float
    p_t: float
    positive: int
    negative: int
    p_sign: float


def seed_tests(differences: Sequence[float]) -> SeedTests | None:
    """Paired t-test and sign test of per-seed differences; None below two seeds."""
    n = len(differences)
    if n < 2:
        return None
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    if std <= NO_SPREAD:
        t = 0.0 if abs(mean) <= NO_SPREAD else math.copysign(math.inf, mean)
        p_t = 1.0 if t == 0.0 else math.nan
    else:
        t = mean / (std / math.sqrt(n))
        p_t = student_t_two_sided(t, n - 1)
    positive = sum(d > 0 for d in differences)
    negative = sum(d < 0 for d in differences)
    return SeedTests(
        n=n,
        t=t,
        p_t=p_t,
        positive=positive,
        negative=negative,
        p_sign=mcnemar_exact(positive, negative),
    )
