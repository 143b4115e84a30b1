#!/bin/bash
# Continue the SmolLM2 study on a fresh workspace, in the background, in one command
# (README.md here, "Resuming the study"):
#   RECPO_DATA_DIR=../shared/data experiments/smollm2_study/session.sh
# 1. refuses a CPU without native bfloat16 (avx512_bf16 or amx_bf16): the study trains in
#    bf16-mixed, which such a CPU emulates about 4x slower (18.5 s per SFT step against
#    4.3 s), so no job could finish within a session there;
# 2. the virtual environment (make), and the study's fixed checkout in ../study: commit
#    a3ff83e with the resume fix 18e365d and the stored-evaluation copy (paths.sft_evals:
#    $RESTORE's diff of src/recpo/pipeline.py and conf/paths/default.yaml) applied,
#    and this tree's run.sh;
# 3. the exported jobs copied back (finished jobs are skipped) and the SFT models' test
#    evaluations laid out for paths.sft_evals (sft_evals.py), so each lane retrains its
#    SFT model and goes straight on to its PO jobs;
# 4. run.sh main with the grid's choice, in the background: lane 0 the `independent`
#    jobs, lane 1 the `published` ones. Log: multirun/study_driver.log. On a CPU with
#    AMX (amx_bf16) it runs `run.sh rerun amx` instead: the SFT models retrained there
#    differ from the AMD EPYC ones the main jobs start from (README.md, "Rerun on
#    another CPU kind"), so such a session runs the design again from its own SFT models,
#    seed 0 first, into rerun-amx/ (FORCE_MAIN=1 runs the main phase anyway); the stored
#    SFT evaluations laid out are those of this CPU's kind.
# 5. a watcher (watch.sh) exporting the finished jobs into experiments/smollm2_study/jobs/
#    every 2 min and committing them, so a job that finishes in the session's last minutes
#    is kept even if nobody takes a last step.
# The SFT models take about 85 min and a lane's first job about 75 min more (measured
# 2026-12-06, two lanes): start this in a session's first minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
main=$PWD
study=${STUDY_DIR:-$main/../study}
data_dir=$(realpath "${RECPO_DATA_DIR:-../shared/data}")
BASE=a3ff83e RESUME_FIX=18e365d RESTORE="e7be0a0^ 5525256"

log=$main/multirun/study_driver.log
mkdir -p "$main/multirun"
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | xargs)
bf16=$(grep -m1 -owE 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | xargs || true)
echo "$(date -u '+%F %T UTC') session.sh on $cpu (native bf16: ${bf16:-none})" | tee -a "$log"
if [ -z "$bf16" ] && [ -z "${FORCE_NO_BF16:-}" ]; then
  echo "this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo):" \
    "the study's bf16-mixed steps would run about 4x slower; not started" \
    "(FORCE_NO_BF16=1 starts it anyway)" >&2
  exit 3
fi
make -s .venv/.installed
if [ ! -d "$study" ]; then
  git worktree add --detach "$study" "$BASE"
  git -C "$study" cherry-pick "$RESUME_FIX" >/dev/null
  # shellcheck disable=SC2086
  git diff $RESTORE -- src/recpo/pipeline.py conf/paths/default.yaml | git -C "$study" apply --index
  git -C "$study" commit -qm "paths.sft_evals (git diff $RESTORE)"
fi
cp experiments/smollm2_study/run.sh "$study/experiments/smollm2_study/run.sh"
mkdir -p multirun/smollm2_study .cache
for link in multirun .cache .venv; do ln -sfn "$main/$link" "$study/$link"; done
cp -rn experiments/smollm2_study/jobs/. multirun/smollm2_study/
PYTHONPATH=$study/src .venv/bin/python experiments/smollm2_study/sft_evals.py \
  "$main/multirun/sft_evals" paths.data_dir="$data_dir"
choice=$(.venv/bin/python experiments/smollm2_study/choose.py multirun/smollm2_study/grid)
cd "$study"
phase=main
if grep -qw amx_bf16 /proc/cpuinfo && [ -z "${FORCE_MAIN:-}" ]; then
  phase="rerun amx"
fi
# shellcheck disable=SC2086
PYTHONPATH=$study/src RECPO_DATA_DIR=$data_dir nohup experiments/smollm2_study/run.sh $phase \
  $choice paths.sft_evals="$main/multirun/sft_evals" >>"$log" 2>&1 &
lanes=$!
nohup nice -n 10 "$main/experiments/smollm2_study/watch.sh" "$lanes" >>"$log" 2>&1 &
echo "phase $phase started in $study ($choice): log $log"
echo "finished jobs are exported to experiments/smollm2_study/jobs/ and committed every 2 min"
