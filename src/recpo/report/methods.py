"""The objective of a preference result, read from its class.

A job's ``objective._target_`` names an objective (``recpo.objectives.plugin.dynamicpo``,
or its class ``DynamicPO``); the report imports it and reads what the class says about
itself (:class:`recpo.objectives.Objective`: ``label``, ``label_keys``, ``base``,
``paired_with``, ``variant_of``, ``order``), so no list of objectives lives here. Switches
(:data:`recpo.report.labels.SWITCH_NAMES`) count as changed when a job sets them against
the class's own defaults: DynamicPO with ``stage1=false`` is an ablation, Top-K with
``dynamic_beta=true`` adds the dynamic β.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from recpo.errors import ReportError
from recpo.objectives.losses import Objective
from recpo.report.jobs import ABSENT, select
from recpo.report.labels import SWITCH_NAMES, ablation_rank, switch_text

# Targets of jobs already run that have since moved: old -> new. Empty: every committed
# job's objective._target_ still imports.
MOVED_TARGETS: dict[str, str] = {}


def objective_class(target: str, source: Path) -> type[Objective]:
    """The objective class that ``target`` names (an objective, or its class)."""
    target = MOVED_TARGETS.get(target, target)
    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ReportError(
            f"{source}: objective._target_ {target} does not import ({err}); the report "
            "reads the objective's label and pairing from its class"
        ) from None
    cls = found if isinstance(found, type) else type(found)
    if not issubclass(cls, Objective):
        raise ReportError(
            f"{source}: objective._target_ {target} is not a recpo.objectives.Objective"
        )
    return cls


def switched(objective: type[Objective], factors: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The switches a job turned off and on against the objective's defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(objective)}
    off, on = set(), set()
    for key in SWITCH_NAMES:
        value = factors.get(key)
        if key in defaults and value is not None and value != defaults[key]:
            (on if value else off).add(key)
    return off, on


def is_plain(objective: type[Objective]) -> bool:
    """An objective the report compares others with, itself compared with none."""
    return objective.base is None and objective.paired_with is None and objective.variant_of is None


def is_full_plugin(objective: type[Objective] | None, factors: dict[str, Any]) -> bool:
    """A DynamicPO plug-in (its class names a ``base``) with every switch on."""
    return bool(objective and objective.base) and not switched(objective, factors)[0]


def label_values(objective: type[Objective], config: DictConfig) -> list[Any]:
    """The hyperparameters the label shows (``label_keys``), as the job set them."""
    values = [select(config, f"objective.{key}") for key in objective.label_keys]
    return [None if value is ABSENT else value for value in values]


def settings_text(objective: type[Objective], config: DictConfig) -> str:
    """``k=3``: the label's hyperparameters with their values ('' without any)."""
    values = label_values(objective, config)
    return ", ".join(f"{k}={v}" for k, v in zip(objective.label_keys, values, strict=True))


def method_label(
    objective: type[Objective], target: str, factors: dict[str, Any], config: DictConfig
) -> str:
    """The method's name as the paper writes it (``DynamicPO w/o Stage (I)``,
    ``Top-K (k=3) + dynamic β``): the class's label, its hyperparameters, the switches
    set against its defaults."""
    label = objective.label or target.rsplit(".", 1)[-1]
    shown = settings_text(objective, config)
    if shown:
        label += f" ({shown})"
    return label + switch_text(*switched(objective, factors))


def objective_rank(
    objective: type[Objective], factors: dict[str, Any], config: DictConfig
) -> tuple:
    """The place of a preference result: the class's ``order``, then (plug-ins) Table 6's
    order of ablations, then the label's hyperparameters (Top-K by k)."""
    ablation = ablation_rank(switched(objective, factors)[0]) if objective.base else 0
    values = [value or 0 for value in label_values(objective, config)]
    return (*objective.order, ablation, *values)
