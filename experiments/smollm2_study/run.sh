#!/bin/bash
# The SmolLM2 study (README.md here; settings in conf/experiment/smollm2_study.yaml),
# one phase per call, two jobs at a time (one torch thread each):
#   RECPO_DATA_DIR=../shared/data experiments/smollm2_study/run.sh sft
#   RECPO_DATA_DIR=../shared/data experiments/smollm2_study/run.sh grid
#   RECPO_DATA_DIR=../shared/data experiments/smollm2_study/run.sh main po.lr=LR objective.beta=BETA
#   RECPO_DATA_DIR=../shared/data experiments/smollm2_study/run.sh rerun NAME po.lr=LR objective.beta=BETA
# sft:  one SFT model per candidate protocol, tested on the full test split;
# grid: DMPO under `independent`, po.lr x beta, 500 PO rows, ranked on the full val split;
# main: DMPO and DynamicPO under both protocols, PO seeds 0, 1, 2, with the lr and beta
#       the grid chose (given as overrides), 1,000 PO rows, the full test split;
# rerun: the main phase's jobs again, in the same order, under rerun-NAME/, e.g. on
#       another CPU kind, whose retrained SFT models differ in their last bits: the seed-0
#       jobs compare job by job with the main ones (compare_reruns.py), and the whole
#       phase is a second run of the design from that kind's SFT models.
# Each job has its own folder under multirun/smollm2_study/: a finished job (its
# results.json) is skipped, an interrupted one resumes, so a call can be repeated.
set -euo pipefail
cd "$(dirname "$0")/../.."
phase=${1:?phase: sft, grid, main or rerun}
shift
python=${PYTHON:-.venv/bin/python}
data_dir=${RECPO_DATA_DIR:-../shared/data}
root=multirun/smollm2_study
jobs=()  # "folder|override override ..."
design() {  # the 12 jobs of the main design under $1/, the grid's choice in $2...
  # Lane 0 runs the `independent` jobs and lane 1 the `published` ones, so the two SFT
  # models (trained again by the first job of each lane after a lost workspace) train
  # side by side; each lane goes seed by seed, DMPO then DynamicPO.
  local folder=$1 seed objective protocol
  shift
  for seed in 0 1 2; do
    for objective in dmpo dynamicpo; do
      for protocol in independent published; do
        jobs+=("$folder/$protocol-$objective-seed$seed|data.candidates=$protocol \
objective=$objective po.seed=$seed $*")
      done
    done
  done
}
case "$phase" in
  sft)
    for protocol in independent published; do
      jobs+=("sft/$protocol|data.candidates=$protocol stages=[sft]")
    done
    ;;
  grid)
    for lr in 1e-05 3e-05; do
      for beta in 1.0 5.0; do
        jobs+=("grid/lr$lr-beta$beta|data.candidates=independent objective=dmpo po.lr=$lr \
objective.beta=$beta po.max_train_examples=500 eval.splits=[val] eval.protocols=[ranking]")
      done
    done
    ;;
  main)
    [ $# -gt 0 ] || { echo "main needs the grid's choice: po.lr=LR objective.beta=BETA" >&2; exit 2; }
    design main "$@"
    ;;
  rerun)
    name=${1:?rerun needs a name, then po.lr=LR objective.beta=BETA}
    shift
    [ $# -gt 0 ] || { echo "rerun needs the grid's choice: po.lr=LR objective.beta=BETA" >&2; exit 2; }
    design "rerun-$name" "$@"
    ;;
  *) echo "unknown phase $phase: sft, grid, main or rerun" >&2; exit 2 ;;
esac

lane() {  # the jobs at positions lane, lane + 2, ... one after another
  local i
  for ((i = $1; i < ${#jobs[@]}; i += 2)); do
    local folder=${jobs[$i]%%|*} overrides=${jobs[$i]#*|}
    mkdir -p "$root/$folder"
    # shellcheck disable=SC2086
    "$python" -m recpo.train +experiment=smollm2_study paths.data_dir="$data_dir" $overrides \
      hydra.run.dir="$root/$folder" >>"$root/$folder/train.log" 2>&1 \
      || echo "job $folder failed: see $root/$folder/train.log" >&2
  done
}
lane 0 &
lane 1 &
wait
