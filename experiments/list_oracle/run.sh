#!/usr/bin/env bash
# The list oracle on LastFM and Steam under both candidate protocols (about 1 minute on
# one core in all). Steam twice: with the LLM runs' rows (val halved by
# augment_train_from_val) and with the trained baselines' rows (all 1,184 val rows).
# Job folders: multirun/list_oracle/<data>-<protocol>/; then
#   python -m recpo.report experiments/list_oracle/jobs --out experiments/list_oracle
set -euo pipefail
export OMP_NUM_THREADS=1 RECPO_DATA_DIR="${RECPO_DATA_DIR:-../shared/data}"
for protocol in published independent; do
  python -m recpo.train +experiment=list_oracle data=lastfm data.candidates=$protocol \
    hydra.run.dir=multirun/list_oracle/lastfm-$protocol
  python -m recpo.train +experiment=list_oracle data=steam data.candidates=$protocol \
    hydra.run.dir=multirun/list_oracle/steam-$protocol
  python -m recpo.train +experiment=list_oracle data=steam data.candidates=$protocol \
    data.source.augment_train_from_val=0 hydra.run.dir=multirun/list_oracle/steam-allval-$protocol
done
