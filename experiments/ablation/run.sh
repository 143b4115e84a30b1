#!/bin/bash
# The Table 6 ablations and the Table 7 Top-K runs of experiments/ablation, one seed per
# call, K = 15, published candidates, both into one sweep folder so that one report
# holds DynamicPO, its ablations and Top-K:
#   RECPO_DATA_DIR=../shared/data experiments/ablation/run.sh SEED
set -euo pipefail
seed=${1:?seed}
python=${PYTHON:-.venv/bin/python}
common=(+experiment=lastfm_study po.lr=1e-05 objective.beta=5.0 seed="$seed"
  hydra.sweep.dir=multirun/ablation/lastfm-tiny)
"$python" -m recpo.train -m "${common[@]}" +sweep=ablations
"$python" -m recpo.train -m "${common[@]}" +sweep=topk
