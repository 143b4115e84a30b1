"""Every objective and variant reproduces, bit for bit, values recorded from the
function-per-objective implementation (commit c8b5f6f) on fixed random inputs.

``recorded_outputs.json`` holds, for each case of :data:`CASES`, what that code
returned: the per-example losses and every metric as exact floats, and SHA-256
digests of the rewards and of the gradients of ``losses.sum()`` with respect to the
policy log-likelihoods. Each case is evaluated through the functional API
(``dmpo(logps, beta=2.5)``), the same call the old functions took; the Hydra configs
are checked against the cases with the defaults.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import recpo.objectives as objectives
from recpo.objectives import BetaDPOState, ObjectiveOutput, PreferenceLogps

RECORDED = Path(__file__).with_name("recorded_outputs.json")
CONF = Path(__file__).resolve().parents[2] / "conf" / "objective"

# name → (dtype, mask kind, integer-valued (ties), K)
INPUTS: dict[str, tuple[torch.dtype, str, bool, int]] = {
    "f64": (torch.float64, "mixed", False, 8),
    "f64_nomask": (torch.float64, "none", False, 8),
    "f32": (torch.float32, "mixed", False, 8),
    "bf16": (torch.bfloat16, "mixed", False, 8),
    "ties": (torch.float64, "none", True, 8),
    "k1": (torch.float64, "none", False, 1),
    "k1_masked": (torch.float32, "mixed", False, 1),
}


def make_logps(name: str) -> PreferenceLogps:
    """Eight prompts, about half without a violating negative (Stage II decides there);
    with the ``mixed`` mask row 2 has no valid negative and row 3 one."""
    dtype, mask_kind, ties, k = INPUTS[name]
    g = torch.Generator().manual_seed(1234)
    batch = 8

    def draw(*shape: int, mean: float, std: float) -> torch.Tensor:
        values = mean + std * torch.randn(*shape, generator=g, dtype=torch.float64)
        return (values.round() if ties else values).to(dtype)

    mask = None
    if mask_kind == "mixed":
        mask = torch.rand(batch, k, generator=g) > 0.3
        mask[0] = True
        mask[2] = False
        if k > 1:
            mask[3] = False
            mask[3, 1] = True
    chosen = draw(batch, mean=-10.0, std=3.0)
    rejected = draw(batch, k, mean=-16.0, std=4.0)
    return PreferenceLogps(
        policy_chosen=chosen.requires_grad_(True),
        policy_rejected=rejected.requires_grad_(True),
        ref_chosen=chosen.detach() + draw(batch, mean=0.0, std=1.0),
        ref_rejected=rejected.detach() + draw(batch, k, mean=0.0, std=1.0),
        chosen_tokens=torch.randint(2, 9, (batch,), generator=g),
        rejected_tokens=torch.randint(2, 9, (batch, k), generator=g),
        mask=mask,
    )


_REFERENCE = [{"beta": 2.5}, {"reference_free": True}]
_BOUNDARY = [
    {"stage1": False},
    {"stage2": False},
    {"stage1": False, "stage2": False},
    {"solver": "lloyd"},
    {"solver": "lloyd", "lloyd_iters": 3},
    {"stage1_inclusive": True},
]
_DUAL_MARGIN = [
    {"dynamic_beta": False},
    {"stage1": False, "stage2": False, "dynamic_beta": False},
    {"gamma": 0.0},
    {"gamma": 2.0, "alpha": 0.9},
]


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases: list[tuple[str, str, dict[str, Any]]] = []
    for data in ("k1", "k1_masked"):
        cases += [("dpo", data, hp) for hp in [{}, *_REFERENCE]]
    for name in ("dmpo", "sdpo"):
        cases += [(name, "f64", hp) for hp in [{}, *_REFERENCE]]
        cases += [(name, data, {}) for data in ("f64_nomask", "f32", "bf16", "k1")]
    cases += [("mppo", data, {}) for data in ("f64", "f64_nomask", "f32")]
    for name in ("dynamicpo", "dynamicpo_sdpo", "dynamicpo_mppo"):
        reference = _REFERENCE if name != "dynamicpo_mppo" else []
        cases += [(name, "f64", hp) for hp in [{}, *_BOUNDARY, *_DUAL_MARGIN, *reference]]
        cases += [(name, data, {}) for data in ("f64_nomask", "f32", "bf16", "ties")]
        cases.append((name, "ties", {"stage1_inclusive": True}))
    topk = [{"k": 1}, {"k": 8}, {"k": 20}, {"dynamic_beta": True}]
    topk.append({"dynamic_beta": True, "gamma": 0.0, "alpha": 0.3})
    cases += [("topk", "f64", hp) for hp in [{}, *topk, *_REFERENCE]]
    cases += [("topk", data, {}) for data in ("f64_nomask", "f32", "ties")]
    beta_dpo = [{"a": 0.0}, {"stage1": False, "stage2": False}, {"filter_ratio": 0.5}]
    beta_dpo += [{"solver": "lloyd"}, {"stage1_inclusive": True}]
    cases += [("beta_dpo", "f64", hp) for hp in [{}, *beta_dpo, *_REFERENCE]]
    cases += [("beta_dpo", data, {}) for data in ("f64_nomask", "f32")]
    return cases


CASES = _cases()
# β-DPO with a running state: two calls in a row, the second sees the first's M_0.
STATEFUL = [{}, {"filter_ratio": 0.5}]


def case_id(name: str, data: str, hyperparameters: dict[str, Any]) -> str:
    return f"{name}/{data}/{json.dumps(hyperparameters, sort_keys=True)}"


def digest(tensor: torch.Tensor | None) -> str:
    """Hash of the exact values, dtype and shape (float64 holds every float dtype exactly)."""
    if tensor is None:
        return "none"
    values = tensor.detach().to(torch.float64).contiguous().numpy().tobytes()
    header = f"{tensor.dtype}{tuple(tensor.shape)}".encode()
    return hashlib.sha256(header + values).hexdigest()[:24]


def evaluate(objective: Any, data: str) -> dict[str, Any]:
    """What one call returns, in the form stored in ``recorded_outputs.json``."""
    logps = make_logps(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # β-DPO's filtering draws from the global generator
        out: ObjectiveOutput = objective(logps)
    out.losses.sum().backward()
    return {
        "losses": [float(v) for v in out.losses.detach().reshape(-1).tolist()],
        "metrics": {k: float(v) for k, v in out.metrics.items()},
        "chosen_rewards": digest(out.chosen_rewards),
        "rejected_rewards": digest(out.rejected_rewards),
        "grad_chosen": digest(logps.policy_chosen.grad),
        "grad_rejected": digest(logps.policy_rejected.grad),
    }


def record() -> dict[str, Any]:
    """Evaluate every case with whatever ``recpo.objectives`` is importable."""
    recorded = {}
    for name, data, hyperparameters in CASES:
        function = getattr(objectives, name)
        recorded[case_id(name, data, hyperparameters)] = evaluate(
            lambda logps, f=function, hp=hyperparameters: f(logps, **hp), data
        )
    for hyperparameters in STATEFUL:
        state = BetaDPOState(momentum=0.9)
        for call in (1, 2):
            key = f"beta_dpo_state/call{call}/{json.dumps(hyperparameters, sort_keys=True)}"
            recorded[key] = evaluate(
                lambda logps, hp=hyperparameters, s=state: objectives.beta_dpo(
                    logps, state=s, **hp
                ),
                "f64",
            )
    return recorded


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text())


def assert_same(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert new["losses"] == old["losses"]
    assert list(new["metrics"]) == list(old["metrics"]), "metric names or their order changed"
    for key, value in old["metrics"].items():
        assert new["metrics"][key] == value, key
    for key in ("chosen_rewards", "rejected_rewards", "grad_chosen", "grad_rejected"):
        assert new[key] == old[key], key


def test_every_case_was_recorded(recorded: dict[str, Any]) -> None:
    expected = {case_id(*case) for case in CASES}
    assert expected <= set(recorded), sorted(expected - set(recorded))[:5]
    assert len(recorded) == len(CASES) + 2 * len(STATEFUL)


def test_every_case_matches_the_recorded_values(recorded: dict[str, Any]) -> None:
    new = record()
    for key, old in recorded.items():
        assert_same(new[key], old)


def _config_case(name: str) -> str:
    return case_id(name, "k1" if name == "dpo" else "f64", {})


@pytest.mark.parametrize(
    "name",
    ["dpo", "dmpo", "sdpo", "mppo", "dynamicpo", "dynamicpo_sdpo", "dynamicpo_mppo", "topk"],
)
def test_each_config_gives_the_recorded_default(name: str, recorded: dict[str, Any]) -> None:
    objective = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    data = "k1" if name == "dpo" else "f64"
    assert_same(evaluate(objective, data), recorded[_config_case(name)])


def test_beta_dpo_config_gives_the_recorded_stateful_calls(recorded: dict[str, Any]) -> None:
    """The config builds a fresh running state (momentum 0.9) that two calls share."""
    objective = instantiate(OmegaConf.load(CONF / "beta_dpo.yaml"))
    for call in (1, 2):
        assert_same(evaluate(objective, "f64"), recorded[f"beta_dpo_state/call{call}/{{}}"])
