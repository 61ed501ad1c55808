#!/usr/bin/env bash
# The project's GPU check, one command: the CUDA tests, then the training-step benchmark
# cells in priority order, then the JPEG decode and end-to-end training benchmarks.
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
E2E_RESERVE_S=100           # kept for the end-to-end runs while the lower-priority cells run
mkdir -p "$RESULTS"
JSONL=$RESULTS/results.jsonl
LOG=$RESULTS/bench.log
export PYTHONUNBUFFERED=1
START=$SECONDS

left() { echo $((BUDGET_S - (SECONDS - START))); }

# run_json LIMIT_S NAME CMD...: run a benchmark command with at most LIMIT_S seconds (and
# never past the budget); its JSON lines go to results.jsonl, the rest to bench.log.
run_json() {
    local limit=$1 name=$2; shift 2
    local remaining; remaining=$(left)
    if [ "$remaining" -le 5 ]; then
        echo "skipped (time budget): $name" | tee -a "$LOG"
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
timeout --signal=KILL 200 "$PYTHON" -m pytest -m cuda -q -s -rA -p no:cacheprovider \
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
cells ai 64 original exact default compile
cells base 64 original exact default compile
for config in a i; do
    for batch in 16 64; do
        if [ "$(left)" -gt "$E2E_RESERVE_S" ]; then
            cells "$config" "$batch" original default
        else
            echo "skipped (kept for end to end): step $config b$batch" | tee -a "$LOG"
        fi
    done
done

# 3. JPEG decode throughput (CPU workers' decoder against nvJPEG), then end-to-end training
# (loader and step, main.py) on synthetic 320x240 videos, CPU decode and --gpu_decode.
run_json 40 "decode" "$PYTHON" benchmarks/bench_decode.py --device $DEVICE
if [ "$(left)" -gt 30 ]; then
    DATA=$(mktemp -d)
    timeout "$(left)" "$PYTHON" -c \
        "from datasets.synthetic import write_synthetic_dataset as w; w('$DATA', 1600, 32, 51)" 2>>"$LOG"
    E2E="$PYTHON benchmarks/bench_end_to_end.py --video_path $DATA/hdf5 --annotation_path $DATA/synthetic.json
        --audio_path $DATA/audio --config ai --batch_size 64 --n_threads 16 --device $DEVICE --epochs 2"
    run_json 120 "end to end ai b64 compile gpu_decode" $E2E --compile --gpu_decode
    run_json 120 "end to end ai b64 compile" $E2E --compile
    rm -rf "$DATA"
else
    echo "skipped (time budget): end to end" | tee -a "$LOG"
fi
echo "gpu_check done in $((SECONDS - START)) s" | tee -a "$LOG"
