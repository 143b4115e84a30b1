"""Read the finished jobs under a folder and group their results into settings.

Each finished job (:mod:`recpo.report.jobs`) yields *entries*, one per result it holds
(:mod:`recpo.report.entries`; jobs sharing one SFT model yield it once per seed).
Entries that differ only in the seed form one *condition*; tables and figures report
each condition as mean ± std over its seeds, in the paper's order of methods.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recpo.errors import ReportError
from recpo.objectives.losses import Objective
from recpo.report.entries import Entry, job_entries
from recpo.report.jobs import Job, find_jobs
from recpo.report.labels import CONTEXT
from recpo.report.methods import objective_rank
from recpo.report.stats import Stat


def freeze(value: Any) -> str:
    """``value`` as canonical JSON text: a key for grouping and comparing."""
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Condition:
    """Entries that differ only in the seed."""

    entries: list[Entry]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> Entry:
        return self.entries[0]

    @property
    def part(self) -> str:
        return self.first.part

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def objective(self) -> type[Objective] | None:
        return self.first.objective

    @property
    def factors(self) -> dict[str, Any]:
        return {k: v for k, v in self.first.factors.items() if k != "seed"}

    @property
    def seeds(self) -> list[Any]:
        return [e.seed for e in self.entries]

    def values(self, split: str, metric: str) -> list[float]:
        key = f"{split}/{metric}"
        out = []
        for entry in self.entries:
            value = entry.metrics.get(key)
            if value is not None and not math.isnan(value):
                out.append(value)
        return out

    def stat(self, split: str, metric: str) -> Stat:
        return Stat.of(self.values(split, metric))


@dataclass
class Study:
    """Everything the report reads: finished jobs, unfinished folders, conditions."""

    root: Path
    jobs: list[Job]
    unfinished: list[Path]
    conditions: list[Condition]
    duplicates: list[tuple[Path, Path]]
    extra_keys: list[str]

    def varying(self) -> dict[str, list[Any]]:
        """Each factor (and extra key) with more than one value among the conditions."""
        out: dict[str, list[Any]] = {}
        names = ("dataset", *CONTEXT, "method")
        for name in names:
            values = {freeze(_factor_or_method(c, name)) for c in self.conditions}
            values.discard(freeze(None))
            if len(values) > 1:
                out[name] = sorted(json.loads(v) for v in values)
        seeds = {freeze(s) for c in self.conditions for s in c.seeds}
        if len(seeds) > 1:
            out["seed"] = sorted(json.loads(s) for s in seeds)
        for key in self.extra_keys:
            out[key] = sorted({str(c.extras.get(key, "–")) for c in self.conditions})
        return out


def _factor_or_method(cond: Condition, name: str) -> Any:
    return cond.method if name == "method" else cond.factors.get(name)


def factor_key(entry: Entry) -> str:
    factors = {k: v for k, v in entry.factors.items() if k != "seed"}
    return freeze([entry.part, entry.method, factors])


def group_conditions(entries: list[Entry]) -> tuple[list[Condition], list[tuple[Path, Path]]]:
    """Entries with the same part and settings, one per seed. SFT results shared by
    several jobs (the same SFT model) count once per seed; any other second job with the
    same settings and seed is left out and returned as ``(kept, left out)``."""
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[freeze([entry.part, entry.settings])].append(entry)
    conditions, duplicates = [], []
    for members in groups.values():
        by_seed: dict[str, Entry] = {}
        for entry in members:
            key = freeze(entry.seed)
            if key in by_seed:
                if entry.part != "sft":
                    duplicates.append((by_seed[key].job.path, entry.job.path))
                continue
            by_seed[key] = entry
        conditions.append(Condition(list(by_seed.values())))
    return conditions, duplicates


def assign_extras(conditions: list[Condition]) -> list[str]:
    """Settings outside :data:`~recpo.report.jobs.FACTORS` that tell apart conditions
    whose factors are all equal (a learning rate, β, a data cap, ...); stored on each
    condition."""
    by_factors: dict[str, list[Condition]] = defaultdict(list)
    for cond in conditions:
        by_factors[factor_key(cond.first)].append(cond)
    keys: set[str] = set()
    for group in by_factors.values():
        if len(group) < 2:
            continue
        for key in set().union(*(c.first.settings for c in group)):
            if len({freeze(c.first.settings.get(key, "–")) for c in group}) > 1:
                keys.add(key)
    for cond in conditions:
        cond.extras = {k: cond.first.settings.get(k, "–") for k in sorted(keys)}
    return sorted(keys)


def collect(root: Path) -> Study:
    """Read every job under ``root`` and group the finished ones into conditions."""
    jobs, unfinished = find_jobs(root)
    if not jobs:
        hint = f" ({len(unfinished)} unfinished: no results.json)" if unfinished else ""
        raise ReportError(
            f"{root}: no finished job (a folder with config.yaml and results.json){hint}"
        )
    entries = [entry for job in jobs for entry in job_entries(job)]
    conditions, duplicates = group_conditions(entries)
    extra_keys = assign_extras(conditions)
    conditions.sort(key=lambda c: (sort_key(c), freeze(c.extras)))
    return Study(root, jobs, unfinished, conditions, duplicates, extra_keys)


def method_rank(cond: Condition) -> tuple:
    """Paper order: baselines, SFT (zero-shot first), then each objective in its class's
    order (plain objectives, DynamicPO with its ablations after the full method, Top-K
    by k, others), then by name."""
    entry = cond.first
    if entry.part == "baseline":
        return (0, entry.method)
    if entry.part == "sft":
        return (1, entry.method != "zero-shot")
    return (*objective_rank(entry.objective, entry.factors, entry.job.config), cond.method)


def orderable(value: Any) -> tuple:
    """A sort key for a setting's value of any type (unset first, numbers, then text)."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool | int | float):
        return (1, float(value), "")
    return (2, 0, str(value))


def sort_key(cond: Condition) -> tuple:
    f = cond.factors
    return (
        orderable(f.get("dataset")),
        method_rank(cond),
        *(orderable(f.get(name)) for name in CONTEXT),
    )
