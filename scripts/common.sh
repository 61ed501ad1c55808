#!/usr/bin/env bash
# Shared by the run_*.sh scripts: the paper's UCF51 settings (SPEC §4), then video
# inference, top-1, retrieval and the report.
#
# Environment:
#   DATA_ROOT    data folder (default: dataset), holding UCF101/hdf5data, UCF101/ucf51_01.json
#                and UCF101/audiocnn14embed512_features (see dataset/README.md)
#   GPUS         visible GPUs (default: 0,1 — the paper's two-GPU DataParallel run)
#   RESULT_ROOT  where result folders go (default: results)
#   PYTHON       interpreter (default: python)
#   EXTRA        extra options for main.py, e.g. "--n_epochs 10 --n_threads 8"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA_ROOT=${DATA_ROOT:-dataset}
GPUS=${GPUS:-0,1}
RESULT_ROOT=${RESULT_ROOT:-results}
PYTHON=${PYTHON:-python}
EXTRA=${EXTRA:-}
UCF=$DATA_ROOT/UCF101

require() {
    if [ ! -e "$1" ]; then
        echo "error: $1 does not exist ($2; see dataset/README.md)" >&2
        exit 2
    fi
}

# run_ccl NAME [main.py options...]: train one configuration, then evaluate it.
run_ccl() {
    local name=$1; shift
    local result=$RESULT_ROOT/ucf51_$name
    require "$UCF/hdf5data" "convert the videos with util_scripts/generate_video_hdf5.py"
    require "$UCF/ucf51_01.json" "build it with util_scripts/ucf101_json.py --audio_path ..."
    if [[ " $* " == *" --use_audio "* ]]; then
        require "$UCF/audiocnn14embed512_features" "unpack audiocnn14embed512_features.tar.gz into $UCF"
    fi
    local data=(--video_path "$UCF/hdf5data" --annotation_path "$UCF/ucf51_01.json"
                --audio_path "$UCF/audiocnn14embed512_features" --result_path "$result"
                --dataset ucf101 --n_classes 51 --model r21d --model_depth 18)
    export CUDA_VISIBLE_DEVICES=$GPUS
    # shellcheck disable=SC2086
    "$PYTHON" main.py "${data[@]}" "$@" --batch_size 16 --n_epochs 300 --learning_rate 0.001 \
        --weight_decay 5e-4 --multistep_milestones 150 225 --checkpoint 100 --n_threads 8 \
        --auto_resume $EXTRA
    # shellcheck disable=SC2086
    "$PYTHON" main.py "${data[@]}" "$@" --no_train --no_val --resume_path latest \
        --inference --inference_subset val --retrieval --report $EXTRA
    "$PYTHON" util_scripts/eval_accuracy.py "$UCF/ucf51_01.json" "$result/val.json" \
        --subset validation -k 1 --ignore
    echo "results: $result (val.json, retrieval.json, report.md)"
}
