#!/bin/bash
# The collapse-curve sweep of experiments/collapse_curve, one seed and protocol per call:
#   RECPO_DATA_DIR=../shared/data experiments/collapse_curve/run.sh SEED [independent]
# K is run in the order 15, 1, 7, 3, 11, 5, 9, 13 (early answers when stopped); finished
# jobs are skipped and interrupted ones resume, so the call can be repeated.
set -euo pipefail
seed=${1:?seed}
protocol=()
if [[ "${2:-published}" == independent ]]; then protocol=(data.candidates=independent); fi
python=${PYTHON:-.venv/bin/python}
for K in 15 1 7 3 11 5 9 13; do
  "$python" -m recpo.train -m +experiment=lastfm_study +sweep=negatives \
    objective=dmpo,dynamicpo po.num_negatives=$K po.lr=1e-05 objective.beta=5.0 \
    seed="$seed" "${protocol[@]}"
done
