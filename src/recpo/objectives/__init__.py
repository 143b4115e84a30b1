"""Preference objectives on log-prob tensors: DPO, DMPO, S-DPO, MPPO and DynamicPO.

Every objective is ``objective(logps: PreferenceLogps, **hyperparameters) ->
ObjectiveOutput`` and is chosen with the Hydra config group ``objective``
(``conf/objective/<name>.yaml``, ``_partial_: true``).
"""

from recpo.objectives.beta import (
    BatchBeta,
    BetaDPOState,
    DynamicBeta,
    beta_dpo_beta,
    dynamic_beta,
)
from recpo.objectives.losses import (
    dmpo,
    dmpo_losses,
    dpo,
    logratios,
    mean_token_probs,
    mppo,
    mppo_losses,
    sdpo,
    sdpo_losses,
)
from recpo.objectives.plugin import beta_dpo, dynamicpo, dynamicpo_mppo, dynamicpo_sdpo, topk
from recpo.objectives.selection import (
    STAGE_ALL,
    STAGE_CLUSTER,
    STAGE_VIOLATION,
    BoundarySelection,
    Clustering1D,
    kmeans_1d_exact,
    kmeans_1d_lloyd,
    select_boundary_negatives,
    select_top_k,
)
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps, require_finite

__all__ = [
    "STAGE_ALL",
    "STAGE_CLUSTER",
    "STAGE_VIOLATION",
    "BatchBeta",
    "BetaDPOState",
    "BoundarySelection",
    "Clustering1D",
    "DynamicBeta",
    "ObjectiveOutput",
    "PreferenceLogps",
    "beta_dpo",
    "beta_dpo_beta",
    "dmpo",
    "dmpo_losses",
    "dpo",
    "dynamic_beta",
    "dynamicpo",
    "dynamicpo_mppo",
    "dynamicpo_sdpo",
    "kmeans_1d_exact",
    "kmeans_1d_lloyd",
    "logratios",
    "mean_token_probs",
    "mppo",
    "mppo_losses",
    "require_finite",
    "sdpo",
    "sdpo_losses",
    "select_boundary_negatives",
    "select_top_k",
    "topk",
]
