"""Ranking and generation metrics against hand-computed values and torchmetrics."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_hit_rate, retrieval_normalized_dcg

from recpo.evaluation.metrics import (
    has_nested_titles,
    judge_generation,
    ranking_metrics,
    target_ranks,
)


def test_ranks_by_hand():
    """Row 0: target 0.9 is the best -> rank 0. Row 1: two higher (0.8, 0.7) -> rank 2.
    Row 2: one tie with the target counts against it -> rank 1."""
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.8, 0.7], [0.4, 0.4, 0.2]])
    target = torch.tensor([1, 0, 0])
    assert target_ranks(scores, target).tolist() == [0, 2, 1]


def test_ranking_metrics_by_hand():
    """Ranks 0, 2, 6: HR@1 = 1/3, HR@5 = 2/3, NDCG@5 = (1 + 1/log2(4) + 0)/3 = 0.5."""
    scores = torch.tensor(
        [[9.0, 1, 2, 3, 4, 5, 6], [5.0, 6, 7, 1, 2, 3, 4], [0.0, 1, 2, 3, 4, 5, 6]]
    )
    m = ranking_metrics(scores, torch.zeros(3, dtype=torch.long))
    assert m["hr@1"].mean().item() == pytest.approx(1 / 3)
    assert m["hr@5"].mean().item() == pytest.approx(2 / 3)
    assert m["ndcg@5"].mean().item() == pytest.approx((1 + 1 / math.log2(4)) / 3)


def test_ranking_metrics_match_torchmetrics():
    """The vectorised path equals torchmetrics' per-query functions (no ties)."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 20, generator=g)
    target = torch.randint(0, 20, (200,), generator=g)
    mine = ranking_metrics(scores, target)
    rel = torch.zeros(200, 20, dtype=torch.bool)
    rel[torch.arange(200), target] = True
    for k in (1, 5):
        ref = torch.stack([retrieval_hit_rate(scores[i], rel[i], top_k=k) for i in range(200)])
        assert torch.allclose(mine[f"hr@{k}"], ref.float())
    ref = torch.stack([retrieval_normalized_dcg(scores[i], rel[i], top_k=5) for i in range(200)])
    assert torch.allclose(mine["ndcg@5"], ref.float(), atol=1e-6)


CANDS = ["Glee", "Glee Cast", "Air", "Muse"]


@pytest.mark.parametrize(
    "answer,target,matcher,valid,hit",
    [
        (" Muse", "Muse", "substring", True, True),
        (" Air", "Muse", "substring", True, False),
        (" Muse and Air", "Muse", "substring", False, False),  # two candidates: invalid
        (" Radiohead", "Muse", "substring", False, False),  # none: invalid
        (
            " Glee Cast",
            "Glee Cast",
            "substring",
            False,
            False,
        ),  # nested titles: the paper's rule fails
        (" Glee Cast", "Glee Cast", "strict", True, True),  # ... the strict matcher does not
        (" Airplane", "Air", "substring", True, True),  # substring inside a word
        (" Airplane", "Air", "strict", False, False),
    ],
)
def test_judge_generation(answer, target, matcher, valid, hit):
    out = judge_generation(answer, CANDS, target, matcher)
    assert (out.valid, out.hit) == (valid, hit)


def test_nested_titles():
    assert has_nested_titles(CANDS) and not has_nested_titles(["Air", "Muse"])
