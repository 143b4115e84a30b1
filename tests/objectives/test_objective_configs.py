"""The ``objective`` Hydra config group: every choice (each ``conf/objective/*.yaml``)
instantiates to a working objective that describes itself for the report."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from recpo.objectives import Objective, ObjectiveOutput, PreferenceLogps

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))


def logps_for(objective: Objective) -> PreferenceLogps:
    """A batch of 4 rows with 6 negatives, or 1 for an objective that takes one (DPO)."""
    g = torch.Generator().manual_seed(0)
    k = 6 if objective.negatives_problem(6) is None else 1
    return PreferenceLogps(
        policy_chosen=-10 + torch.randn(4, generator=g),
        policy_rejected=-12 + 3 * torch.randn(4, k, generator=g),
        ref_chosen=-10 + torch.randn(4, generator=g),
        ref_rejected=-12 + 3 * torch.randn(4, k, generator=g),
        chosen_tokens=torch.full((4,), 3),
        rejected_tokens=torch.full((4, k), 4),
    )


def test_every_pinned_choice_exists() -> None:
    assert set(NEEDS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_keys_are_the_keyword_arguments_of_the_target(name: str) -> None:
    """Every hyperparameter (a field of the target's class) is a key, with its default,
    so ``objective.<key>=...`` works for each of them."""
    cfg = OmegaConf.load(CONF / "objective" / f"{name}.yaml")
    assert "_partial_" not in cfg  # the target builds the objective with these keys
    target = get_method(cfg._target_)
    assert isinstance(target, Objective) and cfg._target_.endswith(f".{name}")
    parameters = inspect.signature(type(target)).parameters
    keywords = {n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    keys = {k for k in cfg if not str(k).startswith("_")}
    assert keys == keywords and len(parameters) == len(keywords)
    for key in keys - {"state"}:  # the yaml repeats the defaults
        assert cfg[key] == parameters[key].default == getattr(target, key), key


@pytest.mark.parametrize("name", NAMES)
def test_instantiate_gives_a_working_objective(name: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+objective={name}"])
    objective = instantiate(cfg.objective)
    out = objective(logps_for(objective))
    assert isinstance(out, ObjectiveOutput) and out.losses.shape == (4,)
    assert torch.isfinite(out.losses).all()


def test_command_line_overrides_reach_the_function() -> None:
    """``objective.gamma=2.0 objective.stage1=false`` (the official code's γ, an ablation)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            overrides=["+objective=dynamicpo", "objective.gamma=2.0", "objective.stage1=false"]
        )
    objective = instantiate(cfg.objective)
    assert objective.gamma == 2.0 and objective.stage1 is False
    logps = logps_for(objective)
    from recpo.objectives import dynamicpo

    torch.testing.assert_close(
        objective(logps).losses, dynamicpo(logps, gamma=2.0, stage1=False).losses
    )


def test_beta_dpo_state_is_one_object_per_instantiation() -> None:
    cfg = OmegaConf.load(CONF / "objective" / "beta_dpo.yaml")
    first, second = instantiate(cfg), instantiate(cfg)
    assert first.state is not second.state
    first(logps_for(first))
    assert first.state.mean is not None and second.state.mean is None


# What each shipped objective reads besides the policy log-likelihoods, with its defaults
# (a new choice is checked against its behaviour only).
NEEDS = {
    "dpo": (True, False),
    "dmpo": (True, False),
    "sdpo": (True, False),
    "mppo": (False, True),
    "dynamicpo": (True, False),
    "dynamicpo_sdpo": (True, False),
    "dynamicpo_mppo": (False, True),
    "topk": (True, False),
    "beta_dpo": (True, False),
}


@pytest.mark.parametrize("name", NAMES)
def test_each_objective_declares_what_it_reads(name: str) -> None:
    """The declarations match what the objective does: without reference log-probs an
    objective that declares it needs them fails and any other works; likewise for the
    token counts; ``objective.reference_free=true`` removes the need for a reference."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+objective={name}"])
    objective = instantiate(cfg.objective)
    if name in NEEDS:
        assert (objective.needs_reference, objective.needs_token_counts) == NEEDS[name]
    full = logps_for(objective)
    without_reference = dataclasses.replace(full, ref_chosen=None, ref_rejected=None)
    without_tokens = dataclasses.replace(full, chosen_tokens=None, rejected_tokens=None)
    for logps, needed in (
        (without_reference, objective.needs_reference),
        (without_tokens, objective.needs_token_counts),
    ):
        if needed:
            with pytest.raises(ValueError, match="reference|token counts"):
                objective(logps)
        else:
            assert torch.isfinite(objective(logps).losses).all()
    if "reference_free" in cfg.objective:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            free = compose(overrides=[f"+objective={name}", "objective.reference_free=true"])
        objective = instantiate(free.objective)
        assert not objective.needs_reference
        assert torch.isfinite(objective(without_reference).losses).all()


def test_the_call_forms_of_an_objective() -> None:
    """``dynamicpo(logps, **changes)`` evaluates, ``dynamicpo(**changes)`` builds (what
    Hydra calls); the default object itself never changes."""
    from recpo.objectives import DynamicPO, dynamicpo, dynamicpo_mppo

    logps = logps_for(dynamicpo)
    configured = dynamicpo(gamma=2.0, stage1=False)
    assert configured == DynamicPO(gamma=2.0, stage1=False) and dynamicpo.gamma == 6.0
    torch.testing.assert_close(
        configured(logps).losses, dynamicpo(logps, gamma=2.0, stage1=False).losses, rtol=0, atol=0
    )
    assert dynamicpo() is dynamicpo
    with pytest.raises(dataclasses.FrozenInstanceError):
        configured.gamma = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="beta"):
        dynamicpo_mppo(logps, beta=2.0)  # MPPO has no β


def objective_class(name: str) -> type[Objective]:
    return type(get_method(OmegaConf.load(CONF / "objective" / f"{name}.yaml")._target_))


@pytest.mark.parametrize("name", NAMES)
def test_each_objective_describes_itself_for_the_report(name: str) -> None:
    """recpo.report names, orders and pairs results from these class attributes. Each
    class sets its own label and order (inherited ones would show DynamicPO as DMPO),
    and names related objectives by their classes: a plug-in extends its ``base`` and is
    compared with it."""
    cls = objective_class(name)
    assert vars(cls).get("label") and "order" in vars(cls)
    assert all(key in {f.name for f in dataclasses.fields(cls)} for key in cls.label_keys)
    for related in (cls.base, cls.paired_with, cls.variant_of):
        assert related is None or issubclass(related, Objective)
    if cls.base is not None:
        assert issubclass(cls, cls.base) and cls.paired_with is cls.base


def test_labels_and_places_are_distinct() -> None:
    classes = [objective_class(name) for name in NAMES]
    assert len({c.label for c in classes}) == len({c.order for c in classes}) == len(classes)
