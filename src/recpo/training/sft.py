"""Supervised fine-tuning: prompt -> target title, loss on the answer tokens only."""

from __future__ import annotations

from typing import Any

import torch

from recpo.training.common import LLMModule


class SFTModule(LLMModule):
    """Fine-tunes the backbone on "history + candidates -> next item".

    The loss is the mean negative log-likelihood over the answer tokens of the
    batch (title tokens and the end token); prompt tokens carry no loss. Only the
    positions that predict answer tokens go through the LM head.
    """

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        scores = self.score(self.model, batch)
        tokens = scores.num_tokens.sum().clamp_min(1)
        loss = -scores.logps.sum() / tokens
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["prompt_ids"].shape[0])
        return loss
