"""How a preference-optimization stage picks its reference model: from what the
objective declares (``needs_reference``), not from its config keys."""

import pytest
from omegaconf import OmegaConf

from recpo.models.backbone import Backbone
from recpo.objectives import losses, plugin
from recpo.objectives.compiled import CompiledObjective
from recpo.training.stages import reference_mode


def cfg(reference: str = "auto"):
    return OmegaConf.create({"po": {"reference": reference}})


def policy(lora: bool) -> Backbone:
    return Backbone(model=None, tokenizer=None, path=None, uses_lora=lora)


@pytest.mark.parametrize(
    "objective, lora, expected",
    [
        (losses.dmpo, False, "copy"),
        (losses.dmpo, True, "disable_adapter"),
        (plugin.dynamicpo, False, "copy"),
        (plugin.dynamicpo_sdpo, True, "disable_adapter"),
        (losses.dmpo(reference_free=True), False, "none"),
        (plugin.dynamicpo(reference_free=True), True, "none"),
        (losses.mppo, False, "none"),
        (plugin.dynamicpo_mppo, True, "none"),
    ],
)
def test_auto_reference_follows_the_objective(objective, lora, expected):
    assert objective.needs_reference == (expected != "none")
    assert reference_mode(cfg(), objective, policy(lora)) == expected


def test_compiled_objective_declares_what_its_eager_one_does():
    compiled = CompiledObjective(losses.mppo, backend="aot_eager")
    assert reference_mode(cfg(), compiled, policy(False)) == "none"
    assert compiled.needs_token_counts == losses.mppo.needs_token_counts
    assert reference_mode(cfg(), CompiledObjective(losses.dmpo), policy(True)) == "disable_adapter"


def test_an_explicit_reference_is_kept():
    assert reference_mode(cfg("precompute"), losses.dmpo, policy(False)) == "precompute"
