"""Preference objectives on log-prob tensors: DPO, DMPO, S-DPO, MPPO and DynamicPO.

Every objective is an :class:`Objective`: a frozen dataclass whose fields are its
hyperparameters, which declares ``needs_reference`` and ``needs_token_counts``, and
is called as ``objective(logps: PreferenceLogps) -> ObjectiveOutput``. The lower-case
names (``dmpo``, ``dynamicpo``, ...) are the objectives with their default
hyperparameters; keyword arguments change them, for one call
(``dynamicpo(logps, gamma=2.0)``) or for good (``dynamicpo(gamma=2.0)``). The Hydra
config group ``objective`` builds them the second way: ``conf/objective/<name>.yaml``
has ``_target_: ...<name>`` and the hyperparameters as keys.
"""

from recpo.objectives.beta import (
    BatchBeta,
    BetaDPOState,
    DynamicBeta,
    beta_dpo_beta,
    dynamic_beta,
)
from recpo.objectives.losses import (
    DMPO,
    DPO,
    MPPO,
    SDPO,
    Objective,
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
from recpo.objectives.plugin import (
    BetaDPO,
    DynamicPO,
    DynamicPOMPPO,
    DynamicPOSDPO,
    TopK,
    beta_dpo,
    dynamicpo,
    dynamicpo_mppo,
    dynamicpo_sdpo,
    topk,
)
from recpo.objectives.selection import (
    RULE_ALL,
    RULE_CLUSTER,
    RULE_VIOLATION,
    BoundarySelection,
    Clustering1D,
    kmeans_1d_exact,
    kmeans_1d_lloyd,
    select_boundary_negatives,
    select_top_k,
)
from recpo.objectives.types import ObjectiveOutput, PreferenceLogps, require_finite

__all__ = [
    "DMPO",
    "DPO",
    "MPPO",
    "SDPO",
    "RULE_ALL",
    "RULE_CLUSTER",
    "RULE_VIOLATION",
    "BatchBeta",
    "BetaDPO",
    "BetaDPOState",
    "BoundarySelection",
    "Clustering1D",
    "DynamicBeta",
    "DynamicPO",
    "DynamicPOMPPO",
    "DynamicPOSDPO",
    "Objective",
    "ObjectiveOutput",
    "PreferenceLogps",
    "TopK",
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
