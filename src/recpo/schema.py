"""The typed schema of the config, checked before any data is loaded or model built.

One mechanism serves every node: a frozen dataclass whose fields carry a type and a
:func:`setting` rule (a range or a set of choices), checked by :func:`check_fields`
in ``__post_init__``. The objectives are such dataclasses already (their fields are
their hyperparameters, ``conf/objective/*.yaml``), so they check themselves when Hydra
builds them; the other nodes (``sft``, ``po``, ``eval``, ``data``, ``trainer``,
``runtime``) have a schema class here. :func:`check_config` builds all of them from the
composed config, adds the checks that span nodes (K against the candidate count, a
Top-K k within K, an objective for ``po``) and resolves every ``_target_`` the run will
build later, so that a bad value ends in one :class:`~recpo.errors.ConfigError` naming
the key, the value and what is allowed, in seconds instead of after an SFT stage.

Why not Hydra structured configs: they check types when the config is composed but
not ranges, report through Hydra's own error path (exit code 1, a stack trace), and
would move every default out of the YAML files the README documents.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from recpo.data.candidates import PROTOCOLS as CANDIDATE_PROTOCOLS
from recpo.data.records import SPLITS
from recpo.data.sources import READER_KEY
from recpo.errors import ConfigError
from recpo.evaluation.evaluate import MATCHERS
from recpo.evaluation.evaluate import PROTOCOLS as EVAL_PROTOCOLS
from recpo.models.scoring import ScoringMethod
from recpo.pipeline import STAGE_LISTS
from recpo.settings import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, SHARE, Checked, setting
from recpo.training.preference import REFERENCES


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def in_node(prefix: str, err: ConfigError) -> ConfigError:
    """``err`` with its key prefixed by the node it belongs to (``objective.``)."""
    return ConfigError(f"{prefix}.{err}" if prefix else str(err))


@dataclass(frozen=True, kw_only=True)
class StageSchema(Checked):
    """``sft`` and ``po``: what both training stages share."""

    lr: float = setting(**POSITIVE)
    max_epochs: int = setting(**AT_LEAST_ONE)
    batch_size: int = setting(**AT_LEAST_ONE)
    max_train_examples: int | None = setting(None, **AT_LEAST_ONE)
    warmup_ratio: float = setting(0.05, **SHARE)


@dataclass(frozen=True, kw_only=True)
class SFTSchema(StageSchema):
    reuse: bool = True


@dataclass(frozen=True, kw_only=True)
class POSchema(StageSchema):
    num_negatives: int = setting(15, **AT_LEAST_ONE)
    resample_negatives: bool = False
    reference: str = setting("auto", choices=("auto", *REFERENCES))
    init_from: str | None = None
    save_model: bool = False
    compile_objective: bool = False
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class EvalSchema(Checked):
    splits: list[str] = setting(choices=SPLITS)
    protocols: list[str] = setting(choices=EVAL_PROTOCOLS)
    max_new_tokens: int = setting(20, **AT_LEAST_ONE)
    matcher: str = setting("substring", choices=MATCHERS)
    max_examples: int | None = setting(None, **AT_LEAST_ONE)


@dataclass(frozen=True, kw_only=True)
class DataSchema(Checked):
    num_candidates: int = setting(20, low=2)
    candidates: str = setting("published", choices=CANDIDATE_PROTOCOLS)
    seed: int = 0
    max_prompt_length: int = setting(1024, **AT_LEAST_ONE)
    domain: str = "item"


@dataclass(frozen=True, kw_only=True)
class SourceSchema(Checked):
    min_history: int = setting(3, **AT_LEAST_ONE)
    max_history: int | None = setting(None, **AT_LEAST_ONE)


@dataclass(frozen=True, kw_only=True)
class TrainerSchema(Checked):
    num_nodes: int = setting(1, **AT_LEAST_ONE)
    gradient_clip_val: float | None = setting(None, **NON_NEGATIVE)
    accumulate_grad_batches: int = setting(1, **AT_LEAST_ONE)
    val_check_interval: float = setting(1.0, **POSITIVE)
    check_val_every_n_epoch: int | None = setting(1, **AT_LEAST_ONE)
    deterministic: bool | str = setting(False, choices=(True, False, "warn"))
    max_steps: int = setting(-1, low=-1)
    limit_train_batches: float = setting(1.0, **NON_NEGATIVE)
    limit_val_batches: float = setting(1.0, **NON_NEGATIVE)
    limit_test_batches: float = setting(1.0, **NON_NEGATIVE)
    overfit_batches: float = setting(0.0, **NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class RuntimeSchema(Checked):
    torch_threads: int | None = setting(None, **AT_LEAST_ONE)
    num_workers: int = setting(0, **NON_NEGATIVE)
    eval_batch_size: int = setting(64, **AT_LEAST_ONE)
    sft_lock_timeout: float | None = setting(None, **NON_NEGATIVE)


@dataclass(frozen=True, kw_only=True)
class RunSchema(Checked):
    seed: int = 0
    scoring: str = setting("shared", choices=typing.get_args(ScoringMethod))


def build(schema: type, node: Any, prefix: str) -> Any:
    """``schema`` built from the keys of ``node`` it names (the others are left to the
    code that reads them); a bad value raises :class:`ConfigError` naming ``prefix.key``."""
    names = {f.name for f in dataclasses.fields(schema)}
    values = {k: _plain(node[k]) for k in names if node is not None and k in node}
    try:
        return schema(**values)
    except ConfigError as err:
        raise in_node(prefix, err) from None


def _target(node: Any, key: str) -> Any:
    """The object ``node._target_`` names (a class or function), or a ConfigError."""
    path = str(node.get("_target_"))
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
            break
        except ImportError:
            continue
    else:
        raise ConfigError(f"{key}._target_={path!r}: no such module")
    for part in parts[end:]:
        if not hasattr(obj, part):
            raise ConfigError(f"{key}._target_={path!r}: {obj.__name__} has no {part!r}")
        obj = getattr(obj, part)
    return obj


def _check_arguments(node: DictConfig, key: str, target: Any, passed: tuple[str, ...]) -> None:
    """Every key of ``node`` is an argument of ``target`` (a typo fails now, not later)."""
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(k for k in node if not k.startswith("_") and k not in params)
    unknown = [k for k in unknown if k not in passed]
    if unknown:
        known = ", ".join(k for k in params if k != "self")
        raise ConfigError(f"{key}.{unknown[0]}: not an argument of {node._target_} ({known})")


def build_objective(node: DictConfig) -> Any:
    """The objective of ``node`` (``cfg.objective``), built as the run will build it.

    Raises:
        ConfigError: naming ``objective.<key>``, its value and what it allows.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    _target(node, "objective")
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise in_node("objective", cause) from None
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            name = str(cause).rsplit(" ", 1)[-1].strip("'")
            raise ConfigError(f"objective.{name}: not a setting of {node._target_}") from None
        raise ConfigError(f"objective: {node._target_} cannot be built: {cause}") from None


def check_config(cfg: DictConfig) -> None:
    """Check the composed LLM-pipeline config; raise :class:`ConfigError` on the first
    bad value. Builds the objective, the optimizers' and schedulers' partials and
    resolves the data module's and Trainer's targets; loads no data and no model."""
    from hydra.utils import instantiate

    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # an interpolation or a ??? left unset
        key = getattr(err, "full_key", "") or "config"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    build(RunSchema, cfg, "")
    stages = _plain(cfg.stages)
    if stages not in STAGE_LISTS:
        raise ConfigError(f"stages={stages!r}: expected one of {list(STAGE_LISTS)}")
    data = build(DataSchema, cfg.data, "data")
    build(SourceSchema, cfg.data.get("source"), "data.source")
    build(SFTSchema, cfg.sft, "sft")
    po = build(POSchema, cfg.po, "po")
    build(EvalSchema, cfg.eval, "eval")
    build(TrainerSchema, cfg.trainer, "trainer")
    build(RuntimeSchema, cfg.runtime, "runtime")
    k, pool = po.num_negatives, data.num_candidates - 1
    if k > pool:
        raise ConfigError(
            f"po.num_negatives={k}: expected 1..{pool} (the non-target candidates of "
            f"data.num_candidates={data.num_candidates})"
        )
    for stage in ("sft", "po"):
        for part in ("optimizer", "scheduler"):
            node = cfg[stage].get(part)
            if node is not None:
                _target(node, f"{stage}.{part}")
                instantiate(node)  # a partial: nothing is built yet
    _check_arguments(cfg.data, "data", _target(cfg.data, "data"), PIPELINE_DATA_ARGS)
    reader = OmegaConf.select(cfg, READER_KEY)
    if not isinstance(reader, DictConfig) or "_target_" not in reader:
        raise ConfigError(
            f"{READER_KEY}: expected the format's reader as a node with _target_ "
            f"(e.g. recpo.data.formats.llara.read_llara), got {reader!r}"
        )
    _target(reader, READER_KEY)
    _check_arguments(cfg.trainer, "trainer", _target(cfg.trainer, "trainer"), ())
    if "po" in stages:
        if cfg.get("objective") is None:
            raise ConfigError("objective: stages include po, so an objective is needed")
        objective = build_objective(cfg.objective)
        problem = objective.negatives_problem(k)
        if problem:
            raise ConfigError(f"po.num_negatives={k}: {problem}")


# Arguments the pipeline passes to the data module itself (recpo.pipeline.build_datamodule).
PIPELINE_DATA_ARGS = (
    "train_mode",
    "batch_size",
    "max_train_examples",
    "num_negatives",
    "resample_negatives",
    "max_eval_examples",
    "eval_batch_size",
    "num_workers",
)
