#!/usr/bin/env bash
# Shared by the run_*.sh scripts: the paper's UCF51 settings (SPEC §4), then video
# inference, top-1, retrieval and the report.
#
# Environment:
#   DATA_ROOT    data folder (default: dataset), holding UCF101/hdf5data, UCF101/ucf51_01.json
#                and UCF101/audiocnn14embed512_features (see dataset/README.md)
#   GPUS         visible GPUs, as CUDA_VISIBLE_DEVICES (default, as the original: 0 for the
#                baseline, 0,1 for the CCL scripts, DataParallel over two). Empty: the CPU.
#                Without a visible GPU the run trains on the CPU and its first line says so.
#   PRECISION    bf16 (default: bf16 autocast on CUDA; the CPU always trains in fp32) or
#                fp32 (the original's precision on CUDA: passes --exact)
#   N_THREADS    data loading workers (default: the CPU count, at most 8)
#   RESULT_ROOT  where result folders go (default: results)
#   PYTHON       interpreter (default: .venv/bin/python when it exists, else python)
#   EXTRA        extra options for main.py, e.g. "--n_epochs 10 --compile"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA_ROOT=${DATA_ROOT:-dataset}
GPUS=${GPUS-0,1}
RESULT_ROOT=${RESULT_ROOT:-results}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
if [ -z "${N_THREADS:-}" ]; then
    # The CPUs this process may use (nproc would also count OMP_NUM_THREADS, which is not ours).
    N_THREADS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 8)
    if [ "$N_THREADS" -gt 8 ]; then N_THREADS=8; fi
fi
case "${PRECISION:-bf16}" in
    bf16) PRECISION_OPTIONS=() ;;
    fp32) PRECISION_OPTIONS=(--exact) ;;
    *) echo "error: PRECISION=$PRECISION is not bf16 or fp32 (fp32 is the original's precision)" >&2
       exit 2 ;;
esac
EXTRA=${EXTRA:-}
UCF=$DATA_ROOT/UCF101

require() {
    if [ ! -e "$1" ]; then
        local relative=""
        if [[ "$1" != /* ]]; then relative=" (relative to the repository root $PWD, where the scripts run)"; fi
        echo "error: $1 does not exist$relative; $2; see dataset/README.md" >&2
        exit 2
    fi
}

# run_ccl NAME [main.py options...]: train one configuration, then evaluate it.
run_ccl() {
    local name=$1; shift
    local result=$RESULT_ROOT/ucf51_$name
    require "$UCF/hdf5data" "convert the videos with util_scripts/generate_video_hdf5.py"
    require "$UCF/ucf51_01.json" "build it with util_scripts/ucf101_json.py --audio_path ..."
    # Features of another network given in EXTRA (--audio_path) replace the released ones.
    if [[ " $* " == *" --use_audio "* && " $EXTRA " != *" --audio_path"* ]]; then
        require "$UCF/audiocnn14embed512_features" "unpack audiocnn14embed512_features.tar.gz into $UCF"
    fi
    local data=(--video_path "$UCF/hdf5data" --annotation_path "$UCF/ucf51_01.json"
                --audio_path "$UCF/audiocnn14embed512_features" --result_path "$result"
                --dataset ucf101 --n_classes 51 --model r21d --model_depth 18
                --n_threads "$N_THREADS" ${PRECISION_OPTIONS[@]+"${PRECISION_OPTIONS[@]}"})
    export CUDA_VISIBLE_DEVICES=$GPUS
    # shellcheck disable=SC2086
    "$PYTHON" main.py "${data[@]}" "$@" --batch_size 16 --n_epochs 300 --learning_rate 0.001 \
        --weight_decay 5e-4 --multistep_milestones 150 225 --checkpoint 100 \
        --auto_resume $EXTRA
    # shellcheck disable=SC2086
    "$PYTHON" main.py "${data[@]}" "$@" --no_train --no_val --resume_path latest \
        --inference --inference_subset val --retrieval --report $EXTRA
    "$PYTHON" util_scripts/eval_accuracy.py "$UCF/ucf51_01.json" "$result/val.json" \
        --subset validation -k 1 --ignore
    echo "results: $result (val.json, retrieval.json, report.md)"
}
