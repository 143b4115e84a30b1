"""What each preference result is compared with, seed by seed, and the Holm families
those comparisons fall into.

A result is compared with the SFT model it started from (the SFT stage of the same job),
with the plain objective its class is ``paired_with`` (DynamicPO - DMPO, Top-K - DMPO),
and, for an ablation (a switch off) or a ``variant_of`` (Top-K), with the full method.
Pairing on the seed takes the seed-to-seed spread of the shared SFT model out of a
comparison.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from recpo.objectives.losses import Objective
from recpo.report.collect import Condition
from recpo.report.entries import Entry
from recpo.report.labels import SWITCH_NAMES, show
from recpo.report.methods import is_full_plugin, is_plain, switched
from recpo.report.stats import Stat


@dataclass(frozen=True)
class Reference:
    """A model results are compared with: ``SFT`` (``objective`` None), a plain
    objective, or (``full``) the full method an ablation or variant changes."""

    label: str
    objective: type[Objective] | None = None
    full: bool = False

    @classmethod
    def of(cls, objective: type[Objective], full: bool = False) -> Reference:
        return cls(objective.label or objective.__name__, objective, full)


SFT = Reference("SFT")


def minus_rank(ref: Reference) -> int:
    """Comparisons of one method in table order: SFT, its plain objective, the full method."""
    return 0 if ref.objective is None else 2 if ref.full else 1


def _pairing(entry: Entry) -> tuple[str, object]:
    """What a result is paired on: every setting of its job outside the objective
    node, and its seed."""
    rest = {k: v for k, v in entry.job.settings.items() if not k.startswith("objective.")}
    return json.dumps(rest, sort_keys=True, default=str), json.dumps(entry.seed, default=str)


def _variant_keys(objective: type[Objective]) -> set[str]:
    """Objective settings a variant may change against the full method it is compared
    with: the target, the switches an ablation turns off, and the hyperparameters that
    make a variant its own method (its ``label_keys``: Top-K's k)."""
    keys = ("_target_", *SWITCH_NAMES, *objective.label_keys)
    return {f"objective.{k}" for k in keys}


def _objective_settings(entry: Entry, skip: set[str]) -> dict[str, object]:
    return {
        k: v for k, v in entry.job.settings.items() if k.startswith("objective.") and k not in skip
    }


def _full_method(entry: Entry) -> type[Objective] | None:
    """The full method an ablation of a plug-in (itself) or a variant (Top-K: DynamicPO)
    is compared with."""
    objective = entry.objective
    if objective.base is not None and switched(objective, entry.factors)[0]:
        return objective
    return objective.variant_of


@dataclass
class References:
    """The results a preference result is compared with, seed by seed: its plain
    objective run with the same settings and seed, and for an ablation or variant the
    full method with the same settings, seed and objective settings (β, α, γ, ...) but
    the variant's own (:func:`_variant_keys`)."""

    plain: dict[tuple[type[Objective], tuple[str, object]], Entry] = field(default_factory=dict)
    full: dict[tuple[type[Objective], tuple[str, object]], list[Entry]] = field(
        default_factory=dict
    )

    def add(self, entry: Entry) -> None:
        if is_plain(entry.objective):
            self.plain[(entry.objective, _pairing(entry))] = entry
        elif is_full_plugin(entry.objective, entry.factors):
            self.full.setdefault((entry.objective, _pairing(entry)), []).append(entry)

    def found(self, entry: Entry) -> list[Reference]:
        """Every reference this result has a partner under, in table order."""
        out = []
        paired = entry.objective.paired_with
        if paired and (paired, _pairing(entry)) in self.plain:
            out.append(Reference.of(paired))
        family = _full_method(entry)
        if family and self.get(entry, Reference.of(family, full=True)) is not None:
            out.append(Reference.of(family, full=True))
        return out

    def get(self, entry: Entry, ref: Reference) -> Entry | None:
        """The partner of ``entry`` under ``ref`` (None when there is none, or when
        several full-method results would fit and the comparison is ambiguous)."""
        if not ref.full:
            return self.plain.get((ref.objective, _pairing(entry)))
        skip = _variant_keys(entry.objective)
        mine = _objective_settings(entry, skip)
        fits = [
            other
            for other in self.full.get((ref.objective, _pairing(entry)), [])
            if all(mine[k] == v for k, v in _objective_settings(other, skip).items() if k in mine)
        ]
        return fits[0] if len(fits) == 1 else None


def comparisons(po: list[Condition]) -> tuple[list[tuple[Condition, Reference]], References]:
    """Each preference condition against ``SFT``, and against every reference
    (:class:`References`) that one of its seeds has."""
    refs = References()
    for cond in po:
        for entry in cond.entries:
            refs.add(entry)
    pairs: list[tuple[Condition, Reference]] = []
    for cond in po:
        pairs.append((cond, SFT))
        found = {ref for e in cond.entries for ref in refs.found(e)}
        pairs += [(cond, ref) for ref in sorted(found, key=minus_rank)]
    return pairs, refs


def finite(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def seed_differences(
    cond: Condition, ref: Reference, refs: References, split: str, metric: str
) -> dict[str, float]:
    """Per seed (its JSON text), the condition's result minus the model ``ref``: the SFT
    stage of the same job, or a partner from :class:`References`."""
    out = {}
    for entry in cond.entries:
        mine = entry.metrics.get(f"{split}/{metric}")
        if ref.objective is None:
            theirs = (entry.job.results or {}).get(f"sft:{split}/{metric}")
        else:
            other = refs.get(entry, ref)
            theirs = None if other is None else other.metrics.get(f"{split}/{metric}")
        if finite(mine) and finite(theirs):
            out[json.dumps(entry.seed, default=str)] = mine - theirs
    return out


def sft_differences(cond: Condition, split: str, metric: str) -> list[float]:
    """The condition's result minus the SFT result of the same job (the model it
    started from), one value per seed."""
    return list(seed_differences(cond, SFT, References(), split, metric).values())


def paired_stat(cond: Condition, split: str, metric: str) -> Stat:
    """Mean ± std over the seeds of :func:`sft_differences`."""
    return Stat.of(sft_differences(cond, split, metric))


# Settings that split tests into separate Holm families: a family holds the tests against
# one reference on the same rows (dataset, candidate lists, backbone); every method, K, α,
# γ, seed and metric within it is one more test of the family.
FAMILY_FACTORS = ("dataset", "backbone", "tokenizer", "candidates", "stages")
FAMILY_NOTE = (
    "Holm family: every test against the same reference (`minus`) on the same rows (one "
    "dataset, candidate protocol and backbone), over all methods, settings (K, α, γ, ...), "
    "seeds and metrics of the table; the Holm-adjusted p controls the chance of any false "
    "rejection in the family."
)


def family_of(cond: Condition, ref: Reference) -> tuple[str, ...]:
    return (ref.label, *(show(cond.factors.get(n)) for n in FAMILY_FACTORS))


def family_labels(families: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """A short name for each family: the reference and the family settings that vary."""
    varying = [i for i in range(1, len(FAMILY_FACTORS) + 1) if len({f[i] for f in families}) > 1]
    return {f: " · ".join([f"vs {f[0]}", *(f[i] for i in varying)]) for f in families}
