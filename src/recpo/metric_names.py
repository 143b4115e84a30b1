"""The names of the metrics recpo logs, in one place.

The objectives' diagnostics (:mod:`recpo.objectives.diagnostics`) return the
``rewards/``, ``boundary/``, ``select/`` and ``beta/`` names below; the training step
logs them as ``train/<name>`` (:func:`train_key`); the validation loop logs the ranking
metrics as ``val/<name>`` every epoch; the evaluation after each stage writes
``<split>/<name>`` to ``results.json`` and to the stage's W&B summary. The report
(:mod:`recpo.report`) and the dashboard (:mod:`recpo.dashboard`) read these names, so a
metric renamed here is renamed everywhere.
"""

from __future__ import annotations

# Objective diagnostics (one value per training batch).
REWARD_CHOSEN = "rewards/chosen"
REWARD_REJECTED = "rewards/rejected"
REWARD_MARGIN = "rewards/margin"
# Share of examples whose chosen reward beats every valid negative's (paper Fig. 4b).
REWARD_WIN_RATE = "rewards/win_rate"
# Share of (example, negative) pairs the chosen reward beats.
REWARD_PAIRWISE_ACCURACY = "rewards/pairwise_accuracy"
# Boundary-critical (L_w - L_k <= 0) and model-discriminative negatives (paper Fig. 3).
CRITICAL_SHARE = "boundary/critical_share"
DISCRIMINATIVE_SHARE = "boundary/discriminative_share"
LOGPS_CHOSEN = "logps/chosen"
LOGPS_REJECTED = "logps/rejected"
# Negatives selected per example, and the share of examples each stage selected.
SELECT_COUNT = "select/count"
SELECT_SHARE = "select/share"
SELECT_STAGE1_SHARE = "select/stage1_share"
SELECT_STAGE2_SHARE = "select/stage2_share"
SELECT_ALL_SHARE = "select/all_share"
# Per-negative β over the selected negatives, and the mean dual margins.
BETA_MEAN = "beta/mean"
BETA_STD = "beta/std"
DELTA_P_MEAN = "delta/p_mean"
DELTA_N_MEAN = "delta/n_mean"

LOSS = "loss"
TRAIN = "train"

# Evaluation: generation (the paper's HitRatio@1 and ValidRatio) and likelihood ranking.
GEN_HR1 = "gen_hr@1"
VALID_RATIO = "valid_ratio"
HR1 = "hr@1"
HR5 = "hr@5"
NDCG5 = "ndcg@5"
# The ranking metrics the validation loop logs every epoch.
RANK_METRICS = (HR1, HR5, NDCG5)

# History axes of a W&B run: Lightning's WandbLogger logs every metric against
# ``trainer/global_step``; its logger connector adds ``epoch`` to every logged row.
STEP = "trainer/global_step"
EPOCH = "epoch"

# The preference stage's W&B summary also holds its SFT model's evaluation under this
# prefix (``sft/test/hr@1``), so a table of preference runs shows both.
SFT_SUMMARY_PREFIX = "sft"


def train_key(name: str) -> str:
    """``train/<name>``: how the training step logs a loss or diagnostic."""
    return f"{TRAIN}/{name}"


def split_key(split: str, name: str) -> str:
    """``<split>/<name>`` (``val/hr@1``, ``test/gen_hr@1``)."""
    return f"{split}/{name}"


def sft_summary_key(key: str) -> str:
    """The key under which a preference run's summary holds its SFT model's ``key``."""
    return f"{SFT_SUMMARY_PREFIX}/{key}"
