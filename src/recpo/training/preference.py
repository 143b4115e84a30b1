"""Preference optimization: the policy starts from the SFT weights and is trained
against a frozen reference (the SFT model) with a multi-negative objective."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from recpo.metric_names import LOSS, train_key
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps
from recpo.training.common import LLMModule

REFERENCES = ("copy", "disable_adapter", "precompute", "none")


class PreferenceModule(LLMModule):
    """Scores the target and K negatives of each prompt with the policy and the
    reference, then applies ``objective`` (e.g. DMPO, DynamicPO).

    Args:
        model: The policy (HF causal LM or a peft model), initialised from SFT.
        objective: ``PreferenceLogps -> ObjectiveOutput`` (a ``conf/objective`` choice).
        reference: How the frozen reference is computed:
            ``copy``: a frozen copy of the initial policy (full fine-tuning);
            ``disable_adapter``: the policy with its LoRA adapter switched off
            (one copy of the base weights; the SFT adapter is merged into them);
            ``precompute``: reference log-probs of all candidates of every training
            row, computed once from the initial policy when fit starts (:meth:`setup`,
            before a resumed run's weights are restored) or given with
            :meth:`set_reference_table`;
            ``none``: reference-free objectives.
        optimizer, scheduler, warmup_ratio, scoring: see :class:`LLMModule`.
    """

    def __init__(
        self,
        model: Any,
        objective: Callable[[PreferenceLogps], ObjectiveOutput],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        warmup_ratio: float = 0.05,
        scoring: str = "shared",
        reference: str = "copy",
    ):
        super().__init__(model, optimizer, scheduler, warmup_ratio, scoring)
        if reference not in REFERENCES:
            raise ValueError(f"po.reference must be one of {REFERENCES}, got {reference!r}")
        self.objective = objective
        self.reference = reference
        self.ref_model = None
        if reference == "copy":
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        elif reference == "disable_adapter" and not hasattr(model, "disable_adapter"):
            raise ValueError("po.reference=disable_adapter needs a LoRA (peft) policy")
        self.register_buffer("ref_table", torch.empty(0), persistent=False)

    def trained_state_keys(self) -> set[str]:
        # The frozen copy is rebuilt from the SFT weights: none of it is saved.
        return {k for k in super().trained_state_keys() if not k.startswith("ref_model.")}

    def set_reference_table(self, table: Tensor) -> None:
        """``(num_train_examples, num_candidates)`` reference log-probs (``precompute``)."""
        self.ref_table = table

    def setup(self, stage: str) -> None:
        """``precompute``: the reference table from the policy as it is when fit
        starts (the SFT weights), over the datamodule's training rows. Lightning calls
        this before it restores a checkpoint, so a resumed run gets the same table.
        ``stage`` is Lightning's (``fit``, ``validate``, ...), passed by that name."""
        if stage != "fit" or self.reference != "precompute" or self.ref_table.numel():
            return
        dm = self.trainer.datamodule
        self.model.to(self.trainer.strategy.root_device)
        table = precompute_reference(
            self,
            self.model,
            dm.candidates_dataloader(),
            len(dm.examples("train")),
            dm.num_candidates,
        )
        self.set_reference_table(table)

    def _reference_context(self) -> AbstractContextManager:
        return (
            self.model.disable_adapter() if self.reference == "disable_adapter" else nullcontext()
        )

    def reference_logps(self, batch: dict[str, Any]) -> Tensor | None:
        """``(B, 1+K)`` reference log-probs of the batch's answers (None without reference)."""
        if self.reference == "none":
            return None
        if self.reference == "precompute":
            if self.ref_table.numel() == 0:
                raise RuntimeError("po.reference=precompute but no reference table was set")
            rows = self.ref_table[batch["example_index"].to(self.ref_table.device)]
            return rows.gather(1, batch["answer_positions"].to(rows.device)).to(self.device)
        with torch.no_grad(), self._reference_context():
            model = self.ref_model if self.ref_model is not None else self.model
            return self.score(model, batch).logps

    def preference_logps(self, batch: dict[str, Any]) -> PreferenceLogps:
        scores = self.score(self.model, batch)
        ref = self.reference_logps(batch)
        mask = batch["answer_mask"][:, 1:].bool().any(-1)
        return PreferenceLogps(
            policy_chosen=scores.logps[:, 0],
            policy_rejected=scores.logps[:, 1:],
            ref_chosen=None if ref is None else ref[:, 0],
            ref_rejected=None if ref is None else ref[:, 1:],
            chosen_tokens=scores.num_tokens[:, 0],
            rejected_tokens=scores.num_tokens[:, 1:],
            mask=mask,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logps = self.preference_logps(batch)
        out = self.objective(logps)
        loss = out.losses.mean()
        b = logps.batch_size
        self.log(train_key(LOSS), loss, prog_bar=True, batch_size=b)
        # Every objective reports rewards, log-probs, boundary shares (and, for the
        # DynamicPO family, selection and beta statistics) as detached scalars, named
        # in recpo.metric_names.
        self.log_dict({train_key(k): v.float() for k, v in out.metrics.items()}, batch_size=b)
        return loss


@torch.no_grad()
def precompute_reference(
    module: LLMModule, model: Any, loader: Any, num_examples: int, num_candidates: int
) -> Tensor:
    """Reference log-probs of every candidate of every training row, ``(N, C)``."""
    from tqdm.auto import tqdm

    table = torch.zeros(num_examples, num_candidates)
    model.eval()
    device = next(model.parameters()).device
    for batch in tqdm(loader, desc="reference log-probs", leave=False):
        moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        logps = module.score(model, moved).logps.float().cpu()
        table[batch["example_index"]] = logps
    return table
