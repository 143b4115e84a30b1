#!/bin/bash
# The α × γ grid of experiments/alpha_gamma (Fig. 5): DynamicPO, K = 15, published
# candidates, one seed per call:
#   RECPO_DATA_DIR=../shared/data experiments/alpha_gamma/run.sh SEED
set -euo pipefail
seed=${1:?seed}
python=${PYTHON:-.venv/bin/python}
"$python" -m recpo.train -m +experiment=lastfm_study +sweep=alpha_gamma \
  po.lr=1e-05 objective.beta=5.0 seed="$seed"
