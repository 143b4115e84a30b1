"""One LightningModule that trains and evaluates any :class:`SequentialRecommender`.

Training: ``ce`` (softmax over all items) or ``bce`` (target vs sampled negatives).
Evaluation: the model scores each row's candidates and the shared ranking metrics
(:func:`recpo.evaluation.metrics.ranking_metrics`) give HR@1, HR@5 and NDCG@5, as
exact means over the rows of the split.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor

from recpo.baselines.data import SequenceBatch
from recpo.baselines.losses import full_softmax_loss, sample_negatives, sampled_bce_loss
from recpo.baselines.models import SequentialRecommender
from recpo.evaluation.metrics import ranking_metrics

LOSSES = ("ce", "bce")


def candidate_scores(model: SequentialRecommender, batch: SequenceBatch) -> Tensor:
    """Scores ``(B, C)`` of each row's candidates, in display order."""
    if batch.candidates is None:
        raise ValueError("evaluation batches need candidates")
    return model.score_items(model(batch.history, batch.lengths), batch.candidates)


class BaselineModule(L.LightningModule):
    """Trains a sequential recommender on next-item prediction.

    Args:
        model: The recommender.
        optimizer: ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``).
        loss: ``ce`` (cross-entropy over all items) or ``bce`` (sampled negatives).
        num_negatives: Negatives per row for ``bce``.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: str = "ce",
        num_negatives: int = 1,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"baseline.loss must be one of {LOSSES}, got {loss!r}")
        self.model = model
        self.optimizer_factory = optimizer
        self.loss = loss
        self.num_negatives = num_negatives
        self._rows: dict[str, list[Tensor]] = {}

    def training_losses(self, batch: SequenceBatch) -> Tensor:
        """Per-row training losses ``(B,)``."""
        hidden = self.model(batch.history, batch.lengths)
        if self.loss == "ce":
            return full_softmax_loss(self.model.score_all(hidden), batch.target)
        negatives = sample_negatives(batch.target, self.model.num_items, self.num_negatives)
        items = torch.cat([batch.target[:, None], negatives], dim=1)
        scores = self.model.score_items(hidden, items)
        return sampled_bce_loss(scores[:, 0], scores[:, 1:])

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> Tensor:
        loss = self.training_losses(batch).mean()
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch.target.size(0),
        )
        return loss

    # ------------------------------------------------------------ evaluation

    def _rank(self, batch: SequenceBatch) -> None:
        metrics = ranking_metrics(
            candidate_scores(self.model, batch), batch.target_index, ks=(1, 5)
        )
        for name, per_row in metrics.items():
            self._rows.setdefault(name, []).append(per_row.detach().cpu())

    def _log_means(self, prefix: str) -> None:
        # Means over all rows (not over batch means), so the last short batch weighs right.
        for name, parts in self._rows.items():
            self.log(f"{prefix}/{name}", torch.cat(parts).mean(), prog_bar=name == "hr@1")
        self._rows = {}

    def validation_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self._rank(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_means("val")

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self._rank(batch)

    def on_test_epoch_end(self) -> None:
        self._log_means("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())
