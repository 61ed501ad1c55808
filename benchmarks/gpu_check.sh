#!/usr/bin/env bash
# The project's GPU check, one command: the CUDA tests, then the training-step benchmark
# cells in priority order (the lower ones only while the end-to-end runs keep their
# reserve), then the end-to-end training and JPEG decode benchmarks, then profiles of the
# batch-16 step.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]
#
# RESULTS_DIR (default: $GPU_CHECK_RESULTS, else benchmarks/results/gpu_check) receives, as
# each measurement finishes (a run cut off early keeps what it measured):
#   results.jsonl   every JSON line of every benchmark, in order, each with its device name
#   tests.log       the CUDA tests' output; their measured errors are its MEASURED lines
#   bench.log       the benchmarks' stderr (progress, failures)
#   env.txt         GPU, driver, Python and package versions
# Environment: PYTHON (default python3), BUDGET_S (default 450): no stage starts after the
# budget, and every command is cut at what is left of it, so the whole check ends within
# about BUDGET_S + 30 seconds; what was skipped for time is said in bench.log. DEVICE
# (default cuda; cpu runs the same plumbing, for trying the script without a GPU).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RESULTS=${1:-${GPU_CHECK_RESULTS:-benchmarks/results/gpu_check}}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-450}
DEVICE=${DEVICE:-cuda}
E2E_RESERVE_S=200           # kept for the end-to-end runs while the lower-priority cells run
RESERVE=0                   # seconds run_json leaves unused at the end of the budget
mkdir -p "$RESULTS"
JSONL=$RESULTS/results.jsonl
LOG=$RESULTS/bench.log
export PYTHONUNBUFFERED=1
START=$SECONDS

left() { echo $((BUDGET_S - (SECONDS - START))); }
usable() { echo $(($(left) - RESERVE)); }

# run_json LIMIT_S NAME CMD...: run a benchmark command with at most LIMIT_S seconds (and
# never past the budget); its JSON lines go to results.jsonl, the rest to bench.log.
run_json() {
    local limit=$1 name=$2; shift 2
    local remaining; remaining=$(usable)
    if [ "$remaining" -le 5 ]; then
        if [ "$RESERVE" -gt 0 ]; then
            echo "skipped (kept for end to end): $name" | tee -a "$LOG"
        else
            echo "skipped (time budget): $name" | tee -a "$LOG"
        fi
        return
    fi
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    echo "== $name ($((SECONDS - START)) s, limit ${limit} s)" >>"$LOG"
    timeout --signal=KILL "$limit" "$@" 2>>"$LOG" | grep --line-buffered '^{' | tee -a "$JSONL"
    local status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        printf '{"failed": "%s", "exit": %d, "seconds": %d}\n' "$name" "$status" "$((SECONDS - START))" \
            | tee -a "$JSONL"
    fi
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    lscpu | grep "Model name"
    "$PYTHON" -c "import sys, torch, torchvision; print('python', sys.version.split()[0]); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); \
print('torchvision', torchvision.__version__); \
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
    nproc
} >"$RESULTS/env.txt" 2>&1

# 1. CUDA tests (every test marked `cuda`), with their measured errors.
echo "== CUDA tests" >>"$LOG"
timeout --signal=KILL 200 "$PYTHON" -m pytest -m cuda -q -s -rA -p no:cacheprovider --durations=10 \
    $(grep -l "pytest.mark.cuda" tests/test_*.py) >"$RESULTS/tests.log" 2>&1
echo "CUDA tests: exit $? after $((SECONDS - START)) s" | tee -a "$LOG"

# 2. Training-step cells, one process each: ours (exact, default, compile) beside the
# original release's step, highest priority first.
STEP="$PYTHON benchmarks/bench_train_step.py --device $DEVICE --steps 20 --warmup 5"
cells() {   # cells CONFIG BATCH MODE...
    local config=$1 batch=$2; shift 2
    for mode in "$@"; do
        case $mode in
            original) flags=(--impl original) ;;
            exact) flags=(--exact) ;;
            default) flags=() ;;
            compile) flags=(--compile --warmup 8) ;;
        esac
        limit=60; [ "$mode" = compile ] && limit=150
        run_json "$limit" "step $config b$batch $mode" $STEP --config "$config" --batch_size "$batch" "${flags[@]}"
    done
}
cells ai 16 original exact default compile
cells base 16 original exact default compile
RESERVE=$E2E_RESERVE_S      # the cells below only run while the end-to-end runs keep their time
cells ai 64 original exact default compile
cells base 64 original exact default compile
for config in a i; do
    for batch in 16 64; do
        cells "$config" "$batch" original default
    done
done
RESERVE=0

# 3. End-to-end training (loader and step, main.py) on synthetic 320x240 videos, frames
# decoded on the GPU and by the CPU workers; then JPEG decode throughput alone (the CPU
# workers' decoder against nvJPEG).
if [ "$(left)" -gt 30 ]; then
    DATA=$(mktemp -d)
    timeout "$(left)" "$PYTHON" -c \
        "from datasets.synthetic import write_synthetic_dataset as w; w('$DATA', 960, 32, 51)" 2>>"$LOG"
    E2E="$PYTHON benchmarks/bench_end_to_end.py --video_path $DATA/hdf5 --annotation_path $DATA/synthetic.json
        --audio_path $DATA/audio --config ai --batch_size 64 --n_threads 16 --device $DEVICE --epochs 2"
    run_json 150 "end to end ai b64 compile gpu_decode" $E2E --compile --gpu_decode
    run_json 120 "end to end ai b64 compile" $E2E --compile
    rm -rf "$DATA"
else
    echo "skipped (time budget): end to end" | tee -a "$LOG"
fi
run_json 40 "decode" "$PYTHON" benchmarks/bench_decode.py --device $DEVICE

# 4. Where the batch-16 step's time goes (host launches against device work), with what
# is left.
PROFILE="$PYTHON benchmarks/profile_step.py --device $DEVICE --config ai --batch_size 16"
run_json 60 "profile ai b16 default" $PROFILE
run_json 60 "profile base b16 default" $PROFILE --config base
run_json 120 "profile ai b16 compile" $PROFILE --compile --warmup 8
run_json 150 "profile ai b16 compile reduce-overhead" $PROFILE --compile --compile_mode reduce-overhead --warmup 8
echo "gpu_check done in $((SECONDS - START)) s" | tee -a "$LOG"
