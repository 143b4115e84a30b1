"""Count-based reference scores for the candidate protocol: popularity and first-order transitions.

They need no training and tell how much of a HitRatio@1 the data's popularity skew
and item-to-item transitions alone explain (the 19 negatives are drawn uniformly
from the catalog, so they are mostly long-tail items).

``python -m recpo.baselines.reference +experiment=lastfm_sasrec paths.data_dir=../shared/data``
prints val/test metrics of both scorers on that experiment's data (any Hydra override
of ``conf/train.yaml``); counts come from the rows the baseline trains on, so the
Steam experiments also count the val histories (``baseline.prefix_splits``).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from recpo.baselines.data import history_prefixes
from recpo.data import Example
from recpo.evaluation.metrics import ranking_metrics


def popularity_scores(train: Sequence[Example], rows: Sequence[Example]) -> Tensor:
    """Scores ``(B, C)``: how often each candidate is a training target."""
    counts = Counter(ex.target for ex in train)
    return torch.tensor(
        [[float(counts[c]) for c in ex.candidates] for ex in rows], dtype=torch.float64
    )


def transition_scores(train: Sequence[Example], rows: Sequence[Example]) -> Tensor:
    """Scores ``(B, C)``: training count of (last history item -> candidate), ties
    broken by popularity (a first-order Markov chain)."""
    pairs = Counter((ex.history[-1], ex.target) for ex in train)
    popularity = popularity_scores(train, rows)
    # Popularity, scaled below one transition count, only orders candidates with equal counts.
    tiebreak = popularity / (popularity.max() + 1.0)
    counts = torch.tensor(
        [[float(pairs[(ex.history[-1], c)]) for c in ex.candidates] for ex in rows],
        dtype=torch.float64,
    )
    return counts + tiebreak


def reference_metrics(
    train: Sequence[Example], splits: dict[str, Sequence[Example]]
) -> dict[str, float]:
    """``{"<scorer>:<split>/<metric>": value}`` for both scorers on each split."""
    out = {}
    for split, rows in splits.items():
        target_index = torch.tensor([ex.candidates.index(ex.target) for ex in rows])
        for name, scorer in (("popularity", popularity_scores), ("transition", transition_scores)):
            for metric, per_row in ranking_metrics(scorer(train, rows), target_index).items():
                out[f"{name}:{split}/{metric}"] = per_row.mean().item()
    return out


def main(overrides: list[str]) -> dict[str, float]:
    import hydra
    from omegaconf import OmegaConf

    from recpo.config import compose

    cfg = compose(["paths.output_dir=.", *overrides])
    dm = hydra.utils.instantiate(cfg.data)
    train = list(dm.examples("train"))
    for split in OmegaConf.select(cfg, "baseline.prefix_splits", default=[]):
        train += history_prefixes(
            dm.examples(split), OmegaConf.select(cfg, "baseline.min_prefix_length", default=1)
        )
    metrics = reference_metrics(train, {s: dm.examples(s) for s in ("val", "test")})
    for key, value in metrics.items():
        print(f"{key:<28}{value:.4f}")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
