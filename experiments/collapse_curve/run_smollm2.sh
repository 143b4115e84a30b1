#!/bin/bash
# The collapse curve with SmolLM2-135M-Instruct on a CPU subset, one seed per call:
#   RECPO_DATA_DIR=../shared/data experiments/collapse_curve/run_smollm2.sh SEED [OVERRIDE...]
# SFT: the model of experiments/lastfm_smollm2 (first 1,000 training rows, 1 epoch,
# batch 4), reused by its content key. PO: DMPO and DynamicPO with the backbone's
# defaults (po.lr 1e-5, beta 1), one epoch on the first 128 training rows, batch 4;
# tested on the first 500 test rows, both protocols. K in the order 15, 1, 7, 3.
# Finished jobs are skipped, so the call can be repeated.
set -euo pipefail
seed=${1:?seed}
python=${PYTHON:-.venv/bin/python}
for K in 15 1 7 3; do
  "$python" -m recpo.train -m +experiment=lastfm_dynamicpo +sweep=negatives backbone=smollm2_135m \
    sft.batch_size=4 sft.max_epochs=1 sft.max_train_examples=1000 trainer.limit_val_batches=2 \
    objective=dmpo,dynamicpo po.num_negatives=$K po.batch_size=4 po.max_train_examples=128 \
    po.max_epochs=1 eval.splits=[test] eval.max_examples=500 optimized_metric=null \
    seed="$seed" hydra.sweep.dir=multirun/collapse_smollm2/lastfm-smollm2 "${@:2}"
done
