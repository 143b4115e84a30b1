"""CompiledObjective against the eager objectives it wraps.

The default tests trace DynamicPO (and its MPPO variant) with the ``aot_eager``
backend (Dynamo + AOTAutograd: the graphs Inductor would compile, run without
generating code) and compile DynamicPO once with Inductor, default mode, on a small
shape (10-60 s on two busy cores, less once Inductor's cache holds it); the other
objectives, shape changes and the other objectives under Inductor are ``slow``. Every test counts the graphs its backend received, so that a
silent fall-back to eager (e.g. past Dynamo's recompile limit) fails instead of
passing trivially.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recpo.objectives import (
    PreferenceLogps,
    dmpo,
    dynamicpo,
    dynamicpo_mppo,
    dynamicpo_sdpo,
    mppo,
    sdpo,
    topk,
)
from recpo.objectives.compiled import TRACED_FINITENESS_CHECK, CompiledObjective


def _compile_unsupported() -> str | None:
    try:
        import torch._dynamo
    except ImportError as err:  # pragma: no cover - depends on the install
        return f"torch._dynamo does not import: {err}"
    if not torch._dynamo.is_dynamo_supported():  # pragma: no cover
        return "torch.compile is not supported on this Python / platform"
    return None


pytestmark = pytest.mark.skipif(
    _compile_unsupported() is not None, reason=str(_compile_unsupported())
)

requires_cpp = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="Inductor on a CPU needs a C++ compiler (none on PATH)",
)
# Inductor writes vector code for the CPU it runs on; with ATen held to other kernels
# (ATEN_CPU_CAPABILITY=default or avx2 on an AVX-512 CPU) torch 2.13's generated code
# fails to compile or to run. Those runs check the recorded values, not Inductor.
native_kernels = pytest.mark.skipif(
    bool(os.environ.get("ATEN_CPU_CAPABILITY")),
    reason="Inductor is checked with the CPU's own kernels (ATEN_CPU_CAPABILITY is set)",
)


class CountingBackend:
    """A ``torch.compile`` backend that counts the graphs it compiles, then hands
    them to ``inner`` (``aot_eager`` or ``inductor``)."""

    def __init__(self, inner: str = "aot_eager"):
        self.inner = torch._dynamo.lookup_backend(inner)
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        self.graphs += 1
        return self.inner(gm, example_inputs)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every test starts from an empty compile cache (the wrapped function's code is
    shared by every CompiledObjective, and the cache holds a few entries per code)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def preference_logps(batch: int, k: int, seed: int, masked: bool) -> PreferenceLogps:
    """Rows that exercise every branch of the selector (float64, as the plugin tests).

    Row 0 has a violation (Stage I), row 1 ties two negatives exactly and has none
    (Stage II), the others are random; with ``masked`` a quarter of the negatives
    are invalid and the last row keeps a single valid negative.
    """
    g = torch.Generator().manual_seed(seed)
    chosen = -15 + 3 * torch.randn(batch, generator=g, dtype=torch.float64)
    rejected = -20 + 4 * torch.randn(batch, k, generator=g, dtype=torch.float64)
    rejected[0, 1] = chosen[0] + 0.5
    rejected[1] = rejected[1].clamp(max=float(chosen[1]) - 1.0)
    rejected[1, 2] = rejected[1, 3]
    mask = None
    if masked:
        mask = torch.rand(batch, k, generator=g) > 0.25
        mask[:2] = True
        mask[-1] = False
        mask[-1, 0] = True
    return PreferenceLogps(
        policy_chosen=chosen.requires_grad_(),
        policy_rejected=rejected.requires_grad_(),
        ref_chosen=chosen.detach() + torch.randn(batch, generator=g, dtype=torch.float64),
        ref_rejected=-20 + 4 * torch.randn(batch, k, generator=g, dtype=torch.float64),
        chosen_tokens=torch.randint(2, 9, (batch,), generator=g),
        rejected_tokens=torch.randint(2, 9, (batch, k), generator=g),
        mask=mask,
    )


def outputs_and_grads(objective: Callable, logps: PreferenceLogps) -> tuple:
    out = objective(logps)
    grads = torch.autograd.grad(
        out.losses.sum(), [logps.policy_chosen, logps.policy_rejected], allow_unused=True
    )
    grads = tuple(torch.zeros(()) if g is None else g for g in grads)
    return out, grads


def assert_same(compiled: Callable, eager: Callable, logps: PreferenceLogps) -> None:
    """Losses, rewards, every diagnostic and the gradients agree to float rounding
    (``assert_close``'s tolerances for the dtype: the inputs are float64, some
    diagnostics float32; fused kernels may sum in another order)."""
    got, got_grads = outputs_and_grads(compiled, logps)
    want, want_grads = outputs_and_grads(eager, logps)
    close = torch.testing.assert_close
    close(got.losses, want.losses)
    close(got.chosen_rewards, want.chosen_rewards)
    close(got.rejected_rewards, want.rejected_rewards)
    assert got.metrics.keys() == want.metrics.keys()
    for key in want.metrics:
        close(got.metrics[key], want.metrics[key], msg=lambda m, key=key: f"{key}: {m}")
    for got_grad, want_grad in zip(got_grads, want_grads):
        close(got_grad, want_grad)


OBJECTIVES = {
    "dynamicpo": dynamicpo,
    "dynamicpo_lloyd": functools.partial(dynamicpo, solver="lloyd"),
    "dynamicpo_ablation": functools.partial(dynamicpo, stage1=False, dynamic_beta=False),
    "dynamicpo_sdpo": dynamicpo_sdpo,
    "dynamicpo_mppo": dynamicpo_mppo,
    "dmpo": dmpo,
    "sdpo": sdpo,
    "mppo": mppo,
    "topk": functools.partial(topk, k=2, dynamic_beta=True),
}


def test_dynamicpo_one_graph_matches_eager_with_and_without_mask() -> None:
    """One forward graph (no graph break: the finiteness check is traced as an
    assertion), and the same results as eager with and without a mask."""
    backend = CountingBackend()
    compiled = CompiledObjective(dynamicpo, backend=backend, fullgraph=True)
    assert compiled.eager is dynamicpo
    assert TRACED_FINITENESS_CHECK
    assert_same(compiled, dynamicpo, preference_logps(4, 6, seed=0, masked=False))
    assert backend.graphs >= 1
    assert_same(compiled, dynamicpo, preference_logps(4, 6, seed=1, masked=True))


@pytest.mark.slow
def test_dynamicpo_matches_eager_after_the_shape_changes() -> None:
    """A new (B, K) recompiles with symbolic sizes; the results still agree."""
    backend = CountingBackend()
    compiled = CompiledObjective(dynamicpo, backend=backend, fullgraph=True)
    for seed, (batch, k) in enumerate([(4, 6), (3, 5), (5, 7)]):
        assert_same(compiled, dynamicpo, preference_logps(batch, k, seed=seed, masked=True))
    assert backend.graphs >= 2


# The MPPO variant scores with mean token probabilities (token counts, no reference):
# a different path through the plug-in; the rest are slow.
QUICK = ("dynamicpo_mppo",)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=() if n in QUICK else pytest.mark.slow)
        for n in OBJECTIVES
        if n != "dynamicpo"
    ],
)
def test_other_objectives_match_eager(name: str) -> None:
    backend = CountingBackend()
    compiled = CompiledObjective(OBJECTIVES[name], backend=backend)
    assert_same(compiled, OBJECTIVES[name], preference_logps(4, 6, seed=3, masked=True))
    assert backend.graphs >= 1


def test_beta_dpo_keeps_its_running_state_step_after_step() -> None:
    """β-DPO updates its running margin (a ``BetaDPOState`` built by its YAML) at every
    call: a compiled copy and an eager copy give the same results and states over steps."""
    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf/objective/beta_dpo.yaml")
    eager, compiled = instantiate(cfg), CompiledObjective(instantiate(cfg), backend="aot_eager")
    for seed in range(3):
        assert_same(compiled, eager, preference_logps(4, 6, seed=seed, masked=True))
        assert compiled.eager.state.mean == eager.state.mean
    assert eager.state.mean is not None


def test_non_finite_log_probs_still_raise() -> None:
    """Eager raises ValueError; the compiled graph's assertion raises RuntimeError
    with the same words. A NaN at a masked position is ignored by both."""
    compiled = CompiledObjective(dynamicpo, backend=CountingBackend(), fullgraph=True)
    logps = preference_logps(4, 6, seed=4, masked=True)
    masked_out = (~logps.mask).nonzero()[0].tolist()
    logps.policy_rejected.detach()[tuple(masked_out)] = float("nan")
    assert_same(compiled, dynamicpo, logps)

    logps.policy_rejected.detach()[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        dynamicpo(logps)
    with pytest.raises(RuntimeError, match="non-finite"):
        compiled(logps)


@requires_cpp
@native_kernels
def test_inductor_dynamicpo_matches_eager() -> None:
    """Inductor's generated code, default mode, small shape."""
    backend = CountingBackend("inductor")
    compiled = CompiledObjective(dynamicpo, backend=backend)
    assert_same(compiled, dynamicpo, preference_logps(4, 6, seed=5, masked=True))
    assert backend.graphs >= 1


@pytest.mark.slow
@requires_cpp
@native_kernels
@pytest.mark.parametrize("name", [n for n in OBJECTIVES if n != "dynamicpo"])
def test_inductor_other_objectives_match_eager(name: str) -> None:
    backend = CountingBackend("inductor")
    compiled = CompiledObjective(OBJECTIVES[name], backend=backend)
    assert_same(compiled, OBJECTIVES[name], preference_logps(4, 6, seed=6, masked=True))
    assert backend.graphs >= 1
