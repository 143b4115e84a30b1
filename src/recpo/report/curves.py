"""Training curves from the preference stage's log (``logs/po/metrics.csv``): each job's
logged steps are split by progress into equal intervals and averaged per interval, then
averaged over the seeds."""

from __future__ import annotations

import math

import numpy as np

from recpo import metric_names as names
from recpo.report.collect import Condition
from recpo.report.stats import Stat

# Training-log columns (logs/po/metrics.csv) the report reads.
WIN_RATE = names.train_key(names.REWARD_WIN_RATE)
CRITICAL = names.train_key(names.CRITICAL_SHARE)
DISCRIMINATIVE = names.train_key(names.DISCRIMINATIVE_SHARE)
SELECT_COUNT = names.train_key(names.SELECT_COUNT)
BETA = names.train_key(names.BETA_MEAN)


def binned(condition: Condition, column: str, bins: int) -> list[np.ndarray]:
    """Per seed: the mean of ``column`` of the preference stage's log in each of ``bins``
    equal intervals of training progress. A step's progress is its middle,
    (step + 0.5) / (last step + 1), so the first and last intervals hold the first and
    last steps however few there are (NaN where nothing was logged). Jobs without the
    column are left out."""
    out = []
    for entry in condition.entries:
        curve = entry.job.curve("po", column)
        if curve is None:
            continue
        steps = curve["step"].to_numpy(dtype=np.int64)
        values = curve[column].to_numpy(dtype=float)
        total = int(steps.max()) + 1
        index = np.minimum((2 * steps + 1) * bins // (2 * total), bins - 1)
        means = np.full(bins, np.nan)
        for b in range(bins):
            if (index == b).any():
                means[b] = values[index == b].mean()
        out.append(means)
    return out


def bin_stats(per_seed: list[np.ndarray], bins: int) -> list[Stat]:
    """Each interval's mean ± std over the seeds that logged something in it."""
    return [Stat.of([float(a[b]) for a in per_seed if not math.isnan(a[b])]) for b in range(bins)]


# Training summaries: name -> (title, column, intervals, which interval; None: all steps).
TRAINING = {
    "selected": ("negatives selected / example", SELECT_COUNT, 1, 0),
    "win_rate_last": ("win rate, last 20%", WIN_RATE, 5, 4),
    "critical_first": ("critical share, first third", CRITICAL, 3, 0),
    "critical_last": ("critical share, last third", CRITICAL, 3, 2),
    "beta": ("mean β", BETA, 1, 0),
}


def training_stat(condition: Condition, name: str) -> Stat:
    """A :data:`TRAINING` summary of the condition's training logs, over its seeds."""
    _, column, bins, index = TRAINING[name]
    return bin_stats(binned(condition, column, bins), bins)[index]
