#!/usr/bin/env bash
# One prepared GPU check for recpo, for a machine with one NVIDIA GPU, Python and
# no network: it installs nothing, says what is missing, and skips what cannot run.
#
#   1. env             nvidia-smi, versions of the stack, missing packages
#   pipeline           the real entry point: one capped `python -m recpo.train` run of
#                      the demo (SFT -> DynamicPO -> evaluation, tiny backbone, LoRA)
#                      under trainer=deepspeed_zero2 on 1 GPU (bf16, accumulation 2;
#                      trainer=gpu, said loudly, when deepspeed is missing); its run
#                      folder is $OUT/pipeline_run
#   2. vs_authors      benchmarks/bench_vs_authors.py: a whole DynamicPO step the
#                      authors' way vs recpo's (and with the objective compiled, CUDA
#                      graphs), batch 4, K=15, Llama-2-7b shape, random weights, bf16,
#                      LoRA, gradient checkpointing: examples/s, tokens/s, peak
#                      memory, MFU; then the objective alone, eager vs compiled
#   3. vs_authors_large  the same model: the largest batch each way fits, and one
#                      batch of 32 vs 4 x 8 accumulation
#   4. vs_authors_smollm2  the whole-step comparison on SmolLM2-135M's shape (random
#                      weights, bf16, full fine-tuning), all parts
#   5. train_dmpo      a few PreferenceModule steps under Lightning, Llama-2-7b shape,
#      train_dynamicpo random weights, bf16, LoRA r=8/alpha=32, gradient checkpointing,
#                      batch 4, K=15, prompts ~200 tokens, DeepSpeed ZeRO-2 on 1 GPU
#                      (plain bf16 + LoRA, said loudly, when deepspeed is missing):
#                      step time and peak memory for DMPO and DynamicPO
#   6. scoring_sdpa    benchmarks/bench_scoring.py, concat vs shared, sdpa
#   7. po_step         benchmarks/bench_po_step.py, DMPO vs DynamicPO step time
#   8. scoring_flex    benchmarks/bench_scoring.py with FlexAttention (compiles; last)
#
# Every step has its own timeout and the whole run stops starting steps once
# GPU_CHECK_BUDGET seconds (default 540) are spent, so it ends within ~9 minutes
# (steps 5-8 were measured before, see experiments/gpu/README.md: with the default
# budget they run only when the new ones finish early).
# Logs, JSON results and summary.md go to $OUT (default ./gpu_out).
#
# Environment:
#   OUT                 output folder (default ./gpu_out)
#   PYTHON              interpreter (default: the first of .venv/bin/python, python3,
#                       python whose torch sees a GPU, else the first with torch)
#   GPU_CHECK_SHAPE     llama2-7b (default) | tiny: the same steps on the CPU with a
#                       2-layer model, without DeepSpeed or FlexAttention (tests this script)
#   GPU_CHECK_BUDGET    seconds for the whole run (default 540)
#   GPU_CHECK_STEPS     the steps to run (default: all, in the order above), e.g.
#                       "vs_authors vs_authors_large"; env always runs
#   GPU_CHECK_STRATEGY  deepspeed | plain: force the training steps' strategy
#   GPU_CHECK_LENGTHS   optional lengths JSON for --lengths-from of bench_scoring and
#                       bench_vs_authors (real
#                       LastFM lengths written by bench_scoring.py --export-lengths,
#                       for a machine without the data)
#   RECPO_DATA_DIR      folder holding lastfm/ (used by the benchmarks when present)
#
# Usage: bash scripts/gpu_check.sh            GPU_CHECK_SHAPE=tiny bash scripts/gpu_check.sh

set -uo pipefail # no -e: a failed step is recorded and the next one runs

cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
SHAPE="${GPU_CHECK_SHAPE:-llama2-7b}"
BUDGET="${GPU_CHECK_BUDGET:-540}"
STEPS=" ${GPU_CHECK_STEPS:-pipeline vs_authors vs_authors_large vs_authors_smollm2 train scoring_sdpa po_step scoring_flex} "
wants() { [[ "$STEPS" == *" $1 "* ]]; }
START=$SECONDS
LAST_STATUS=
SUMMARY="$OUT/summary.md"
TABLE="$OUT/.steps.md"
# Files of an earlier run in the same folder would mix into this run's summary.
rm -f "$OUT"/{env,nvidia-smi,pipeline,train_*,scoring_*,po_step,vs_authors*}.{log,json} "$OUT/notes.txt" "$SUMMARY"
rm -rf "$OUT/pipeline_run"
: >"$TABLE"
: >"$OUT/commands.txt"

# The interpreter: $PYTHON if given; else the first of .venv/bin/python, python3,
# python whose torch sees a GPU (for the GPU shape), else the first with torch.
pick_python() {
    local candidates=() py
    [[ -x .venv/bin/python ]] && candidates+=(.venv/bin/python)
    for py in python3 python; do
        command -v "$py" >/dev/null && candidates+=("$(command -v "$py")")
    done
    if [[ "$SHAPE" != tiny ]]; then
        for py in "${candidates[@]}"; do
            "$py" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && {
                echo "$py"
                return
            }
        done
    fi
    for py in "${candidates[@]}"; do
        "$py" -c "import torch" 2>/dev/null && {
            echo "$py"
            return
        }
    done
    echo "${candidates[0]:-python3}"
}
PY="${PYTHON:-$(pick_python)}"

# recpo importable without installing it; nothing may reach the network.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
# Tiny backbones and synthetic data: a scratch folder, not $OUT (which is copied back).
if [[ -z "${RECPO_CACHE_DIR:-}" ]]; then
    RECPO_CACHE_DIR="$(mktemp -d)"
    trap 'rm -rf "$RECPO_CACHE_DIR"' EXIT
fi
export RECPO_CACHE_DIR

# have MODULE: whether it imports, as the env step found it (one Python start
# instead of one per module), or tried here when that step did not finish.
have() {
    if grep -q '^MISSING:' "$OUT/env.log" 2>/dev/null; then
        ! grep -q "^IMPORT_FAIL $1:" "$OUT/env.log"
    else
        "$PY" -c "import $1" >/dev/null 2>&1
    fi
}

loud() {
    printf '\n%s\n!!! %s\n%s\n\n' "$(printf '!%.0s' {1..78})" "$*" "$(printf '!%.0s' {1..78})" |
        tee -a "$OUT/notes.txt"
}

# run NAME TIMEOUT COMMAND...: the command's output goes to $OUT/NAME.log; its
# status and duration to the summary. The timeout shrinks to what is left of
# the budget; with under 20 s left the step is skipped.
run() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 20)); then
        echo "=== $name: SKIPPED, time budget spent"
        echo "| $name | skipped (budget spent) | 0 s | - |" >>"$TABLE"
        LAST_STATUS=skipped
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (timeout ${limit}s): $*" | tee -a "$OUT/commands.txt"
    local t0=$SECONDS
    timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local took=$((SECONDS - t0)) status
    case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    LAST_STATUS=$status
    local why
    if [[ $rc != 0 ]]; then # the error, for the summary table (no '|' inside a cell)
        why=$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c 1-160 | tr '|' '/')
        status="$status: ${why:-no output}"
    fi
    echo "| $name | $status | $took s | $name.log |" >>"$TABLE"
    echo "--- $name: $status in ${took}s; last lines of $OUT/$name.log:"
    tail -n 30 "$OUT/$name.log"
}

skip() {
    echo "=== $1: SKIPPED, $2"
    echo "| $1 | skipped: $2 | 0 s | - |" >>"$TABLE"
}

if [[ "$SHAPE" == tiny ]]; then
    DEVICE=cpu
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    BENCH_MODEL=(--device cpu --dtype float32 --shape tiny --lora --gradient-checkpointing)
    TRAIN_MODEL=(--device cpu --shape tiny)
    SCORING_RUN=(--ks 1 15 --repeats 1)
    PO_RUN=(--batch-sizes 4 --repeats 3 --warmup 1 --objective-repeats 5 --batches 2)
    # Small and without torch.compile (tens of seconds on a CPU): tests the script.
    VS_MODEL=(--device cpu --dtype float32 --shape tiny --lora --gradient-checkpointing --no-compile)
    VS_RUN=(--parts step objective --batch-sizes 2 --micro-batch 2 --repeats 1 --objective-repeats 2)
    VS_LARGE=(--parts largest accumulate --memory-cap-gib 0.3 --max-batch 8 --micro-batch 2
        --accumulation 2 --large-repeats 1)
    VS_SMOL=()
elif [[ "$SHAPE" == llama2-7b ]]; then
    DEVICE=cuda
    BENCH_MODEL=(--device cuda --dtype bfloat16 --shape llama2-7b --lora --gradient-checkpointing)
    TRAIN_MODEL=(--device cuda --shape llama2-7b)
    SCORING_RUN=(--ks 1 3 7 15 --repeats 2)
    # Every objective timing follows a 7B forward: few of them.
    PO_RUN=(--batch-sizes 4 32 --repeats 5 --warmup 1 --objective-repeats 10 --batches 2)
    # reduce-overhead: the compiled objective replays as a CUDA graph.
    VS_MODEL=(--device cuda --dtype bfloat16 --shape llama2-7b --lora --gradient-checkpointing
        --compile-mode reduce-overhead)
    VS_RUN=(--parts step objective --batch-sizes 4 --repeats 5 --objective-repeats 20)
    VS_LARGE=(--parts largest accumulate --max-batch 64 --large-repeats 2 --no-compile)
    VS_SMOL=(--device cuda --dtype bfloat16 --shape smollm2-135m --compile-mode reduce-overhead
        --batch-sizes 4 --repeats 5 --max-batch 256 --objective-repeats 20)
else
    echo "GPU_CHECK_SHAPE must be llama2-7b or tiny, not '$SHAPE'" >&2
    exit 2
fi
LENGTHS=()
if [[ -n "${GPU_CHECK_LENGTHS:-}" && -f "${GPU_CHECK_LENGTHS}" ]]; then
    LENGTHS=(--lengths-from "$GPU_CHECK_LENGTHS")
fi

echo "# gpu_check: shape=$SHAPE device=$DEVICE python=$PY out=$OUT budget=${BUDGET}s"

# 1. environment ---------------------------------------------------------------
{
    date -u
    hostname
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
} >"$OUT/nvidia-smi.log" 2>&1
cat "$OUT/nvidia-smi.log"
run env 60 "$PY" scripts/gpu_check.py env

if ! have torch; then
    loud "torch is not importable with $PY: nothing else can run (set PYTHON=...)"
fi
if [[ "$DEVICE" == cuda ]] && ! "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    loud "torch sees no CUDA device: the GPU steps will fail (use GPU_CHECK_SHAPE=tiny on a CPU)"
fi
need() { # need STEP MODULE...: prints 1 when every module imports, else 0 (and says why)
    local step=$1 module why
    shift
    for module in "$@"; do
        if ! have "$module"; then
            why=$(grep -m1 "^IMPORT_FAIL $module:" "$OUT/env.log" 2>/dev/null)
            loud "$step: skipped, 'import $module' fails${why:+: ${why#IMPORT_FAIL }}" >&2
            echo 0
            return
        fi
    done
    echo 1
}
TRAIN_DEPS=$(need "train_dmpo/train_dynamicpo" peft lightning recpo.training.preference)
VS_DEPS=$(need "vs_authors" peft sklearn lightning recpo.training.preference recpo.data)
PO_DEPS=$(need "po_step" peft lightning recpo.training.preference recpo.data)
SCORING_DEPS=$(need "scoring_sdpa/scoring_flex" transformers peft recpo.models.scoring)
PIPELINE_DEPS=$(need "pipeline" hydra lightning peft recpo.train)

# the entry point: SFT -> PO -> evaluation through python -m recpo.train ------------
if [[ "$SHAPE" == tiny ]]; then
    PIPELINE_TRAINER=(trainer=cpu) # the CPU shape checks the step itself
elif have deepspeed; then
    PIPELINE_TRAINER=(trainer=deepspeed_zero2 trainer.devices=1 trainer.accumulate_grad_batches=2)
else
    PIPELINE_TRAINER=(trainer=gpu)
    loud "deepspeed is NOT importable: the pipeline step runs under trainer=gpu; ZeRO-2 is NOT checked"
fi
if ! wants pipeline; then
    :
elif ((PIPELINE_DEPS)); then
    run pipeline 240 "$PY" -m recpo.train +experiment=demo backbone.finetune=lora \
        "${PIPELINE_TRAINER[@]}" data.source.synthetic.num_users=150 \
        sft.max_train_examples=256 po.max_train_examples=128 sft.batch_size=8 po.batch_size=4 \
        sft.max_epochs=1 po.max_epochs=1 eval.max_examples=64 eval.max_new_tokens=8 \
        hydra.run.dir="$OUT/pipeline_run" paths.cache_dir="$RECPO_CACHE_DIR" \
        paths.sft_dir="$RECPO_CACHE_DIR/sft"
    # Checkpoints (DeepSpeed folders) stay on the machine: results, logs and predictions come back.
    rm -rf "$OUT"/pipeline_run/{sft,po}/checkpoints
else
    skip pipeline "missing packages (see env.log)"
fi

# 2-4. a whole DynamicPO step, the authors' way vs recpo's ----------------------
vs_authors() { # vs_authors NAME TIMEOUT ARGS...: one bench_vs_authors.py run
    local name=$1 limit=$2
    shift 2
    if ! wants "$name"; then
        return
    fi
    if ((!VS_DEPS)); then
        skip "$name" "missing packages (see env.log)"
        return
    fi
    run "$name" "$limit" "$PY" benchmarks/bench_vs_authors.py "$@" ${LENGTHS[@]+"${LENGTHS[@]}"} \
        --json-out "$OUT/$name.json"
}
vs_authors vs_authors 200 "${VS_MODEL[@]}" "${VS_RUN[@]}"
vs_authors vs_authors_large 200 "${VS_MODEL[@]}" "${VS_LARGE[@]}"
if ((${#VS_SMOL[@]})); then
    vs_authors vs_authors_smollm2 150 "${VS_SMOL[@]}"
elif wants vs_authors_smollm2; then
    skip vs_authors_smollm2 "SmolLM2-135M's shape is GPU-only here (minutes per step on a CPU)"
fi

# 5. a few training steps, DMPO and DynamicPO ----------------------------------
if [[ "$SHAPE" == tiny ]]; then
    STRATEGY=plain
    echo "(tiny shape on the CPU: DeepSpeed skipped, plain float32 + LoRA)" | tee -a "$OUT/notes.txt"
elif have deepspeed; then
    STRATEGY=deepspeed
else
    STRATEGY=plain
    loud "deepspeed is NOT importable: the training steps run WITHOUT DeepSpeed (plain bf16 + LoRA on 1 GPU); ZeRO-2 is NOT checked"
fi
STRATEGY="${GPU_CHECK_STRATEGY:-$STRATEGY}"
for objective in dmpo dynamicpo; do
    wants train || break
    if ((!TRAIN_DEPS)); then
        skip "train_$objective" "missing packages (see env.log)"
        continue
    fi
    run "train_$objective" 120 "$PY" scripts/gpu_check.py train --objective "$objective" \
        --strategy "$STRATEGY" "${TRAIN_MODEL[@]}" --json-out "$OUT/train_$objective.json"
    if [[ "$STRATEGY" == deepspeed && "$LAST_STATUS" == FAILED* ]]; then
        # Keep the step time and memory of bf16 + LoRA at least; later runs skip DeepSpeed.
        STRATEGY=plain
        loud "DeepSpeed ZeRO-2 FAILED for $objective (see train_$objective.log): rerunning WITHOUT DeepSpeed"
        run "train_${objective}_plain" 120 "$PY" scripts/gpu_check.py train \
            --objective "$objective" --strategy plain "${TRAIN_MODEL[@]}" \
            --json-out "$OUT/train_${objective}_plain.json"
    fi
done

# 6. scoring benchmark, sdpa ---------------------------------------------------
if ! wants scoring_sdpa; then
    :
elif ((SCORING_DEPS)); then
    run scoring_sdpa 120 "$PY" benchmarks/bench_scoring.py "${BENCH_MODEL[@]}" --attn sdpa \
        "${SCORING_RUN[@]}" ${LENGTHS[@]+"${LENGTHS[@]}"} --json-out "$OUT/scoring_sdpa.json"
else
    skip scoring_sdpa "missing packages (see env.log)"
fi

# 7. DMPO vs DynamicPO step time -------------------------------------------------
if ! wants po_step; then
    :
elif ((PO_DEPS)); then
    run po_step 150 "$PY" benchmarks/bench_po_step.py "${BENCH_MODEL[@]}" "${PO_RUN[@]}" \
        --json-out "$OUT/po_step.json"
else
    skip po_step "missing packages (see env.log)"
fi

# 8. scoring benchmark, FlexAttention (compiles per shape: last, rows kept on timeout)
if ! wants scoring_flex; then
    :
elif [[ "$DEVICE" != cuda ]]; then
    skip scoring_flex "FlexAttention needs CUDA"
elif ((SCORING_DEPS)); then
    # bpe only: every (K, regime) shape compiles anew, ~10-30 s each.
    run scoring_flex 150 "$PY" benchmarks/bench_scoring.py "${BENCH_MODEL[@]}" --attn flex \
        "${SCORING_RUN[@]}" --regimes bpe ${LENGTHS[@]+"${LENGTHS[@]}"} --json-out "$OUT/scoring_flex.json"
else
    skip scoring_flex "missing packages (see env.log)"
fi

# summary ------------------------------------------------------------------------
{
    echo "# gpu_check summary ($(date -u '+%Y-%m-%d %H:%M UTC'), shape=$SHAPE, $((SECONDS - START)) s)"
    echo
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    else
        echo "no nvidia-smi"
    fi
    grep -E '^(python|MISSING|GPU:|torch CUDA)' "$OUT/env.log" 2>/dev/null
    [[ -f "$OUT/notes.txt" ]] && grep -E '^!!! |^\(' "$OUT/notes.txt"
    echo
    echo "| step | status | time | log |"
    echo "|---|---|---|---|"
    cat "$TABLE"
    echo
    if [[ -f "$OUT/pipeline.log" ]]; then
        echo "## pipeline (python -m recpo.train: ${PIPELINE_TRAINER[*]})"
        grep -A3 -E '^test +HitRatio' "$OUT/pipeline.log"
        echo
    fi
    for name in train_dmpo train_dmpo_plain train_dynamicpo train_dynamicpo_plain; do
        [[ -f "$OUT/$name.log" ]] && grep -E '^RESULT' "$OUT/$name.log"
    done
    for name in vs_authors vs_authors_large vs_authors_smollm2 scoring_sdpa po_step scoring_flex; do
        [[ -f "$OUT/$name.log" ]] || continue
        echo
        echo "## $name"
        grep -E '^(# |###|lengths:|\||  +[a-z -]+: |check|largest batch|recpo: |DynamicPO over)' "$OUT/$name.log"
    done
} >"$SUMMARY" 2>/dev/null
rm -f "$TABLE"
echo
echo "================================ summary ($SUMMARY)"
cat "$SUMMARY"
