"""Every objective and variant reproduces values recorded on fixed random inputs.

``recorded_outputs.json`` holds, for each case of :data:`CASES`, what the objective
returned: the per-example losses, every metric (names in order), the rewards and the
gradients of ``losses.sum()`` with respect to the policy log-likelihoods, each with its
dtype. The losses and metrics were recorded from the function-per-objective
implementation (commit c8b5f6f); the rewards and gradients from the current one on an
AMD EPYC (AVX-512), where its losses, metrics and the SHA-256 digests of its rewards
and gradients matched that record bit for bit.

The last bits of a float are not portable: PyTorch picks its CPU kernels per machine
(``ATEN_CPU_CAPABILITY``), and a vectorised sum adds in another order. Floats are
compared within a tolerance fit for their dtype (:data:`TOLERANCE`); what is exact by
construction is compared exactly: metric names and their order, and the shares that
count negatives or examples (selected, boundary-critical, won), which the inputs keep
away from ties. ``.ci/run`` runs this file under the ``default`` and ``avx2`` kernels
too. Each case is evaluated through the functional API (``dmpo(logps, beta=2.5)``);
the Hydra configs are checked against the cases with the defaults.

Re-record (only after a change meant to alter the values):
``.venv/bin/python -m tests.objectives.test_objective_recorded --record --overwrite``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import recpo.objectives as objectives
from recpo.objectives import BetaDPOState, ObjectiveOutput, PreferenceLogps

pytestmark = pytest.mark.recorded
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


# (relative, absolute) tolerance per dtype: a few units in the last place, and an
# absolute floor for values that cancel to about zero.
TOLERANCE: dict[str, tuple[float, float]] = {
    "torch.float64": (1e-12, 1e-14),
    "torch.float32": (1e-5, 1e-7),
    "torch.bfloat16": (2e-2, 1e-3),
}
# Metrics that are counts divided by counts: exact on any machine.
EXACT_METRICS = ("select/", "boundary/", "rewards/win_rate", "rewards/pairwise_accuracy")


def values(tensor: torch.Tensor | None) -> dict[str, Any] | None:
    """A tensor as recorded: dtype, shape and values (float64 holds every float dtype)."""
    if tensor is None:
        return None
    flat = tensor.detach().to(torch.float64).reshape(-1).tolist()
    return {"dtype": str(tensor.dtype), "shape": list(tensor.shape), "values": flat}


def evaluate(objective: Any, data: str) -> dict[str, Any]:
    """What one call returns, in the form stored in ``recorded_outputs.json``."""
    logps = make_logps(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # β-DPO's filtering draws from the global generator
        out: ObjectiveOutput = objective(logps)
    out.losses.sum().backward()
    return {
        "losses": values(out.losses),
        "metrics": {k: {"dtype": str(v.dtype), "value": float(v)} for k, v in out.metrics.items()},
        "chosen_rewards": values(out.chosen_rewards),
        "rejected_rewards": values(out.rejected_rewards),
        "grad_chosen": values(logps.policy_chosen.grad),
        "grad_rejected": values(logps.policy_rejected.grad),
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


def dumps(cases: dict[str, Any]) -> str:
    """The record as JSON, one case a line (reviewable diffs, a third of indented JSON)."""
    lines = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in cases.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text())


def close(new: float, old: float, dtype: str) -> bool:
    """``new`` equals ``old`` within the tolerance of ``dtype`` (NaN and inf: exactly)."""
    if not (math.isfinite(new) and math.isfinite(old)):
        return new == old or (math.isnan(new) and math.isnan(old))
    rel, tol = TOLERANCE[dtype]
    return abs(new - old) <= max(tol, rel * abs(old))


def assert_same(new: dict[str, Any], old: dict[str, Any], case: str = "") -> None:
    """``new`` reproduces the recorded ``old``: floats within their dtype's tolerance,
    names, order, dtypes, shapes and counts exactly."""
    assert list(new["metrics"]) == list(old["metrics"]), f"{case}: metric names or order changed"
    for key, want in old["metrics"].items():
        got = new["metrics"][key]
        assert got["dtype"] == want["dtype"], f"{case} {key}: dtype"
        if key.startswith(EXACT_METRICS):
            assert got["value"] == want["value"], f"{case} {key}: a count changed"
        else:
            assert close(got["value"], want["value"], want["dtype"]), (
                f"{case} {key}: {got['value']!r} != {want['value']!r}"
            )
    for key in ("losses", "chosen_rewards", "rejected_rewards", "grad_chosen", "grad_rejected"):
        got, want = new[key], old[key]
        if want is None:
            assert got is None, f"{case} {key}: expected none"
            continue
        assert (got["dtype"], got["shape"]) == (want["dtype"], want["shape"]), f"{case} {key}"
        for i, (g, w) in enumerate(zip(got["values"], want["values"])):
            assert close(g, w, want["dtype"]), f"{case} {key}[{i}]: {g!r} != {w!r}"


def test_every_case_was_recorded(recorded: dict[str, Any]) -> None:
    expected = {case_id(*case) for case in CASES}
    assert expected <= set(recorded), sorted(expected - set(recorded))[:5]
    assert len(recorded) == len(CASES) + 2 * len(STATEFUL)


def test_every_case_matches_the_recorded_values(recorded: dict[str, Any]) -> None:
    new = record()
    for key, old in recorded.items():
        assert_same(new[key], old, key)


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


def test_tolerances_reject_a_real_change(recorded: dict[str, Any]) -> None:
    """The comparison is not vacuous: a loss moved by 1e-9 (float64), a metric by 1e-4
    (float32) or one count fail it."""
    case = recorded[case_id("dynamicpo", "f64", {})]
    assert_same(json.loads(json.dumps(case)), case)
    for path, delta in ((("losses", "values", 0), 1e-9), (("metrics", "beta/mean", "value"), 1e-4)):
        changed = json.loads(json.dumps(case))
        node = changed
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] += delta * max(1.0, abs(node[path[-1]]))
        with pytest.raises(AssertionError):
            assert_same(changed, case)
    changed = json.loads(json.dumps(case))
    changed["metrics"]["select/count"]["value"] += 1e-12
    with pytest.raises(AssertionError, match="a count changed"):
        assert_same(changed, case)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Record recorded_outputs.json from this code.")
    parser.add_argument("--record", action="store_true", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args()
    if RECORDED.exists() and not args.overwrite:
        raise SystemExit(f"{RECORDED} exists; pass --overwrite to replace it")
    RECORDED.write_text(dumps(record()))
    print(f"wrote {RECORDED}")
