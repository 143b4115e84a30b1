"""The ``objective`` Hydra config group: every choice instantiates to a working objective."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from recpo.objectives import ObjectiveOutput, PreferenceLogps

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = [
    "dpo",
    "dmpo",
    "sdpo",
    "mppo",
    "dynamicpo",
    "dynamicpo_sdpo",
    "dynamicpo_mppo",
    "topk",
    "beta_dpo",
]


def logps_for(name: str) -> PreferenceLogps:
    g = torch.Generator().manual_seed(0)
    k = 1 if name == "dpo" else 6
    return PreferenceLogps(
        policy_chosen=-10 + torch.randn(4, generator=g),
        policy_rejected=-12 + 3 * torch.randn(4, k, generator=g),
        ref_chosen=-10 + torch.randn(4, generator=g),
        ref_rejected=-12 + 3 * torch.randn(4, k, generator=g),
        chosen_tokens=torch.full((4,), 3),
        rejected_tokens=torch.full((4, k), 4),
    )


def test_every_required_choice_exists() -> None:
    assert {p.stem for p in (CONF / "objective").glob("*.yaml")} >= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_keys_are_the_keyword_arguments_of_the_target(name: str) -> None:
    cfg = OmegaConf.load(CONF / "objective" / f"{name}.yaml")
    assert cfg._partial_ is True
    target = get_method(cfg._target_)
    parameters = inspect.signature(target).parameters
    keywords = {n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    keys = {k for k in cfg if not str(k).startswith("_")}
    assert keys <= keywords, keys - keywords
    for key in keys - {"state"}:  # the yaml repeats the function's defaults
        assert cfg[key] == parameters[key].default, key


@pytest.mark.parametrize("name", NAMES)
def test_instantiate_gives_a_working_objective(name: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+objective={name}"])
    objective = instantiate(cfg.objective)
    out = objective(logps_for(name))
    assert isinstance(out, ObjectiveOutput) and out.losses.shape == (4,)
    assert torch.isfinite(out.losses).all()


def test_command_line_overrides_reach_the_function() -> None:
    """``objective.gamma=2.0 objective.stage1=false`` (the official code's γ, an ablation)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            overrides=["+objective=dynamicpo", "objective.gamma=2.0", "objective.stage1=false"]
        )
    objective = instantiate(cfg.objective)
    assert objective.keywords["gamma"] == 2.0 and objective.keywords["stage1"] is False
    logps = logps_for("dynamicpo")
    from recpo.objectives import dynamicpo

    torch.testing.assert_close(
        objective(logps).losses, dynamicpo(logps, gamma=2.0, stage1=False).losses
    )


def test_beta_dpo_state_is_one_object_per_instantiation() -> None:
    cfg = OmegaConf.load(CONF / "objective" / "beta_dpo.yaml")
    first, second = instantiate(cfg), instantiate(cfg)
    assert first.keywords["state"] is not second.keywords["state"]
    first(logps_for("beta_dpo"))
    assert first.keywords["state"].mean is not None and second.keywords["state"].mean is None
