#!/bin/bash
# The collapse curve with SmolLM2-135M-Instruct on a CPU subset, one seed per call:
#   RECPO_DATA_DIR=../shared/data experiments/collapse_curve/run_smollm2.sh SEED [OVERRIDE...]
# Settings in conf/experiment/lastfm_smollm2_study.yaml: SFT as in
# experiments/lastfm_smollm2 (first 1,000 training rows, 1 epoch, batch 4), trained once
# per seed and reused by its content key; DMPO and DynamicPO with the backbone's
# defaults (po.lr 1e-5, beta 1), one epoch on the first 128 training rows, batch 4;
# tested on the first 500 test rows, both protocols. K in the order 15, 1, 7, 3.
# Finished jobs are skipped, so the call can be repeated.
set -euo pipefail
seed=${1:?seed}
python=${PYTHON:-.venv/bin/python}
for K in 15 1 7 3; do
  "$python" -m recpo.train -m +experiment=lastfm_smollm2_study +sweep=negatives \
    objective=dmpo,dynamicpo po.num_negatives=$K seed="$seed" \
    hydra.sweep.dir=multirun/collapse_smollm2/lastfm-smollm2 "${@:2}"
done
