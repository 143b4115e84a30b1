"""Any objective with its selection, β and loss captured by ``torch.compile``.

DynamicPO's own work per step (boundary selection, dual-margin β, the loss and its
diagnostics) is about a hundred tensor ops on ``(B, K)`` tensors of a few hundred
elements: on a GPU its cost is kernel launches, not arithmetic. :class:`CompiledObjective`
wraps an objective callable, unchanged, and hands ``torch.compile`` a function of
plain tensors, so that Dynamo captures the objective's forward in one graph,
AOTAutograd its backward in another, and Inductor fuses each into a few kernels.
``mode="reduce-overhead"`` additionally replays the compiled kernels as a CUDA
graph on CUDA devices (one launch per graph); on a CPU it behaves like the default mode.

The eager objective stays the reference: ``CompiledObjective(f).eager is f``, and
the tests check that both give the same losses, rewards, diagnostics and gradients.

One behaviour differs. The eager objectives check that the log-probs are finite
with :func:`~recpo.objectives.types.require_finite`, which on a CPU raises
``ValueError`` through a Python ``if`` on a tensor, something a graph cannot hold.
Inside a compiled graph the same check is an asynchronous assertion (what
``require_finite`` already does on accelerators): a non-finite valid log-prob
raises ``RuntimeError`` with the same message when the graph runs. The
substitution applies only while ``torch.compile`` traces; eager calls are untouched.

Usage::

    from recpo.objectives import dynamicpo
    from recpo.objectives.compiled import CompiledObjective

    objective = CompiledObjective(functools.partial(dynamicpo, gamma=2.0))
    out = objective(logps)  # ObjectiveOutput, as from the eager objective

Each new ``(B, K)`` compiles once more (after the second shape, with symbolic
sizes); the first call of a shape takes seconds (CPU: tens of seconds). Dynamo
warns once that it traces through the selector's ``functools.lru_cache`` of
split tables: those are pure functions of ``(K, device, dtype)``, so tracing
the function itself computes the same tables.
β-DPO's running margin (a ``BetaDPOState`` that every call updates) is updated by
the compiled objective as by the eager one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from recpo.objectives import types
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps

Objective = Callable[[PreferenceLogps], ObjectiveOutput]

#: ``torch.compile`` modes that replay the compiled kernels as CUDA graphs on CUDA.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def _require_finite_in_graph(values: Tensor, valid: Tensor | None, name: str) -> None:
    """What :func:`~recpo.objectives.types.require_finite` does on accelerators, on
    every device: an asynchronous assertion instead of a Python branch on a tensor."""
    if values.numel() == 0:
        return
    values = values.detach()
    if valid is not None:
        values = values.masked_fill(~valid, 0.0)
    torch._assert_async(
        values.abs().amax() < math.inf, f"{name} contains non-finite log-probs (±inf or NaN)"
    )


def _register_traced_finiteness_check() -> bool:
    """Trace ``require_finite`` as :func:`_require_finite_in_graph` (once per process).

    Returns whether the substitution is in place; without it (an older torch) the
    check still works, as a graph break.
    """
    substitute = getattr(torch.compiler, "substitute_in_graph", None)
    if substitute is None:
        return False
    try:
        substitute(types.require_finite)(_require_finite_in_graph)
    except (TypeError, ValueError, RuntimeError):  # already registered, or refused
        return False
    return True


TRACED_FINITENESS_CHECK = _register_traced_finiteness_check()


def _objective_on_tensors(objective: Objective) -> Callable[..., tuple[Any, ...]]:
    """``objective`` as a function of the :class:`PreferenceLogps` fields, returning
    the :class:`ObjectiveOutput` fields: what ``torch.compile`` is given."""

    def run(
        policy_chosen: Tensor,
        policy_rejected: Tensor,
        ref_chosen: Tensor | None,
        ref_rejected: Tensor | None,
        chosen_tokens: Tensor | None,
        rejected_tokens: Tensor | None,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        out = objective(
            PreferenceLogps(
                policy_chosen=policy_chosen,
                policy_rejected=policy_rejected,
                ref_chosen=ref_chosen,
                ref_rejected=ref_rejected,
                chosen_tokens=chosen_tokens,
                rejected_tokens=rejected_tokens,
                mask=mask,
            )
        )
        return out.losses, out.chosen_rewards, out.rejected_rewards, out.metrics

    return run


class CompiledObjective:
    """``objective(logps) -> ObjectiveOutput`` run through ``torch.compile``.

    Args:
        objective: any objective (a function or a ``functools.partial`` of one, e.g.
            a ``conf/objective`` choice); kept as :attr:`eager`.
        mode: ``torch.compile`` mode: None (default), ``"reduce-overhead"`` (CUDA
            graphs on CUDA), ``"max-autotune"``, ...
        backend: ``"inductor"`` (default; needs a C++ compiler on a CPU) or any
            other ``torch.compile`` backend, by name or as a callable (``"aot_eager"``
            traces and runs the same graphs without generating code).
        dynamic: ``torch.compile``'s ``dynamic`` (None: symbolic sizes after a
            second shape is seen).
        fullgraph: fail instead of splitting the objective into several graphs.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        mode: str | None = None,
        backend: str | Callable[..., Any] = "inductor",
        dynamic: bool | None = None,
        fullgraph: bool = False,
    ):
        self.eager = objective
        self.mode = mode
        self.backend = backend
        self._compiled = torch.compile(
            _objective_on_tensors(objective),
            mode=mode,
            backend=backend,
            dynamic=dynamic,
            fullgraph=fullgraph,
        )

    @property
    def needs_reference(self) -> bool:
        """Whether the objective reads reference log-probs (that of :attr:`eager`)."""
        return self.eager.needs_reference

    @property
    def needs_token_counts(self) -> bool:
        """Whether the objective reads token counts (that of :attr:`eager`)."""
        return self.eager.needs_token_counts

    def __call__(self, logps: PreferenceLogps) -> ObjectiveOutput:
        cuda_graphs = self.mode in CUDA_GRAPH_MODES and logps.policy_chosen.is_cuda
        if cuda_graphs:
            # A new training step: outputs of the previous replay may be overwritten.
            torch.compiler.cudagraph_mark_step_begin()
        losses, chosen_rewards, rejected_rewards, metrics = self._compiled(
            logps.policy_chosen,
            logps.policy_rejected,
            logps.ref_chosen,
            logps.ref_rejected,
            logps.chosen_tokens,
            logps.rejected_tokens,
            logps.mask,
        )
        if cuda_graphs:
            # Detached outputs are kept past the step (logging): copy them out of
            # the graph's static buffers, which the next replay reuses.
            chosen_rewards, rejected_rewards = chosen_rewards.clone(), rejected_rewards.clone()
            metrics = {key: value.clone() for key, value in metrics.items()}
        return ObjectiveOutput(losses, chosen_rewards, rejected_rewards, dict(metrics))

    def __repr__(self) -> str:
        return f"CompiledObjective({self.eager!r}, mode={self.mode!r}, backend={self.backend!r})"
