"""Containers passed between the forward pass and the preference objectives."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class PreferenceLogps:
    """Log-likelihoods of the chosen answer and of K negatives for a batch of prompts.

    Log-probs are summed over the answer tokens, end token included, never averaged.
    Entries of the negatives where ``mask`` is False are ignored by every objective:
    they may hold any value (padding zeros, NaN) and receive no gradient.

    Attributes:
        policy_chosen: ``(B,)`` log π_θ(y_w | x).
        policy_rejected: ``(B, K)`` log π_θ(y_k | x).
        ref_chosen: ``(B,)`` log π_ref(y_w | x), or None when there is no reference model.
        ref_rejected: ``(B, K)`` log π_ref(y_k | x), or None.
        chosen_tokens: ``(B,)`` number of answer tokens of y_w (MPPO's mean token log-prob).
        rejected_tokens: ``(B, K)`` number of answer tokens of each y_k.
        mask: ``(B, K)`` bool validity of each negative; None means all are valid.
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_tokens: Tensor | None = None
    rejected_tokens: Tensor | None = None
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        # Shape checks read metadata only: no device synchronisation.
        if self.policy_chosen.dim() != 1 or self.policy_rejected.dim() != 2:
            raise ValueError(
                "policy_chosen must be (B,) and policy_rejected (B, K); got "
                f"{tuple(self.policy_chosen.shape)} and {tuple(self.policy_rejected.shape)}"
            )
        batch, k = self.policy_rejected.shape
        if self.policy_chosen.shape[0] != batch:
            raise ValueError(f"batch sizes differ: {self.policy_chosen.shape[0]} vs {batch}")
        expected = {
            "ref_chosen": (batch,),
            "ref_rejected": (batch, k),
            "chosen_tokens": (batch,),
            "rejected_tokens": (batch, k),
            "mask": (batch, k),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}; got {tuple(value.shape)}")
        if (self.ref_chosen is None) != (self.ref_rejected is None):
            raise ValueError("ref_chosen and ref_rejected must be given together")
        if self.mask is not None and self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor; got {self.mask.dtype}")

    @property
    def batch_size(self) -> int:
        return self.policy_rejected.shape[0]

    @property
    def num_negatives(self) -> int:
        """K, the width of the negatives tensor (the per-example count may be smaller)."""
        return self.policy_rejected.shape[1]

    @property
    def valid(self) -> Tensor:
        """``(B, K)`` bool validity mask; all True when ``mask`` is None."""
        if self.mask is not None:
            return self.mask
        return torch.ones_like(self.policy_rejected, dtype=torch.bool)


@dataclass
class ObjectiveOutput:
    """What every objective returns.

    Attributes:
        losses: ``(B,)`` per-example losses, never averaged (the caller reduces).
            An example without any valid negative gets loss 0 and no gradient.
        chosen_rewards: ``(B,)`` detached implicit reward of the chosen answer
            (β0·r_w; MPPO: the probability p_w).
        rejected_rewards: ``(B, K)`` detached rewards of the negatives, 0 where masked.
        metrics: detached scalar diagnostics keyed by short slash-separated names.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def require_finite(values: Tensor, valid: Tensor | None, name: str) -> None:
    """Fail loudly on ±inf or NaN among the valid entries of ``values``.

    On CPU this raises ``ValueError`` straight away. On an accelerator it queues an
    asynchronous device assertion instead, so the training step never waits on the
    host; a failure then surfaces as a device-side assert at the next kernel launch.

    Args:
        values: ``(B,)`` or ``(B, K)`` log-probs.
        valid: bool mask of the same shape (None: every entry counts).
        name: the name used in the error message.

    Raises:
        ValueError: on CPU, when a valid entry is not finite.
    """
    if values.numel() == 0:
        return
    values = values.detach()
    if valid is not None:
        values = values.masked_fill(~valid, 0.0)
    # max |x| < inf fails exactly when an entry is ±inf or NaN (NaN propagates).
    finite = values.abs().amax() < math.inf
    if values.device.type == "cpu":
        if not finite:
            raise ValueError(
                f"{name} contains non-finite log-probs (±inf or NaN) at valid positions; "
                "check the forward pass (label masking, dtype overflow) or mask them out"
            )
    else:
        torch._assert_async(finite, f"{name} contains non-finite log-probs (±inf or NaN)")
