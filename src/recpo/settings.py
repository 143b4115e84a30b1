"""Typed settings: a dataclass field with a rule, checked when the dataclass is built.

A setting is a field of a frozen dataclass with a type annotation and, where the type
is not enough, a :class:`Rule` (bounds, open or closed, or a set of choices) given by
:func:`setting`. :func:`check_fields` checks every field; :class:`Checked` calls it in
``__post_init__``. The objectives (their fields are their hyperparameters) and the
schema of the other config nodes (:mod:`recpo.schema`) use this one mechanism, so
every bad value is reported the same way: ``<key>=<value>: expected <what>``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from recpo.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What a setting allows beyond its type: numeric bounds and/or choices (for a
    string, or for every item of a list)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule (None: it does not)."""
        if self.choices is not None:
            items = value if isinstance(value, list | tuple) else [value]
            bad = [v for v in items if v not in self.choices]
            if bad:
                what = "each of" if isinstance(value, list | tuple) else "one of"
                return f"{what} {list(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        low, high = self.low, self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return self.describe()
        if high is not None and (value >= high if self.high_open else value > high):
            return self.describe()
        return None

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"a value in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"a value {'>' if self.low_open else '>='} {self.low:g}"
        return f"a value {'<' if self.high_open else '<='} {self.high:g}"


def setting(default: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A dataclass field with a :class:`Rule`, e.g. ``beta: float = setting(1.0, **POSITIVE)``."""
    return dataclasses.field(default=default, metadata={"rule": Rule(**rule)})


POSITIVE = {"low": 0, "low_open": True}  # > 0
AT_LEAST_ONE = {"low": 1}  # >= 1
NON_NEGATIVE = {"low": 0}  # >= 0
SHARE = {"low": 0, "high": 1, "high_open": True}  # in [0, 1)


def type_problem(value: Any, annotation: Any) -> str | None:
    """Why ``value`` is not of ``annotation`` (None: it is). Types other than bool, int,
    float, str, lists, literals and unions of them (a state object) are not checked."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        problems = [type_problem(value, arg) for arg in args]
        return None if None in problems else " or ".join(p for p in problems if p)
    if origin is Literal:
        return None if value in args else f"one of {list(args)}"
    if origin is list:
        if not isinstance(value, list | tuple):
            return "a list"
        for item in value:
            problem = type_problem(item, args[0])
            if problem:
                return f"a list of {problem}s"
        return None
    if annotation is type(None):
        return None if value is None else "null"
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false"
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if annotation is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number and math.isfinite(value) else "a finite real number"
    if annotation is str:
        return None if isinstance(value, str) else "a string"
    return None


def check_fields(obj: Any) -> None:
    """Check every field of the dataclass ``obj`` against its type and rule.

    Raises:
        ConfigError: ``<field>=<value>: expected <what>`` for the first bad field.
    """
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        problem = type_problem(value, hints.get(field.name, Any))
        rule = field.metadata.get("rule")
        if problem is None and rule is not None and value is not None:
            problem = rule.problem(value)
        if problem is not None:
            raise ConfigError(f"{field.name}={value!r}: expected {problem}")


class Checked:
    """Base of a settings dataclass: its fields are checked when one is built."""

    def __post_init__(self) -> None:
        check_fields(self)
