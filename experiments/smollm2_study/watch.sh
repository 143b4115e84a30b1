#!/bin/bash
# While the process PID runs (session.sh's lanes), every INTERVAL seconds (default 120):
# export the finished jobs into experiments/smollm2_study/jobs/ (scripts/export_jobs.py)
# and commit what changed there, and once more when it ends. A session that ends before
# its last step is taken keeps every job that finished in time.
#   experiments/smollm2_study/watch.sh PID [INTERVAL]
set -uo pipefail
cd "$(dirname "$0")/../.."
main=$PWD
lanes=$1 interval=${2:-120}
jobs=experiments/smollm2_study/jobs

save() {
  PYTHONPATH=$main/src .venv/bin/python scripts/export_jobs.py multirun/smollm2_study "$jobs"
  git add -- "$jobs"
  if ! git diff --cached --quiet -- "$jobs"; then
    finished=$(git diff --cached --name-only -- "$jobs" | grep '/results.json$' |
      sed "s|^$jobs/||; s|/results.json$||" | paste -sd, -)
    # --only: commits these paths alone, whatever else is staged; a busy index waits a turn.
    git commit -q --only -m "smollm2_study: finished jobs exported (${finished:-files of finished jobs})" \
      -- "$jobs" && echo "$(date -u '+%F %T UTC') committed ${finished:-jobs}"
  fi
}

while kill -0 "$lanes" 2>/dev/null; do
  save
  sleep "$interval"
done
save
