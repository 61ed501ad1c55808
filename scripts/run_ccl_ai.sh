#!/usr/bin/env bash
# CCL (AI): audio and image teachers, weight 0.5 each. UCF51 split 1, the paper's settings.
# Usage: [DATA_ROOT=dataset] [GPUS=0,1] [PRECISION=bf16|fp32] [EXTRA="..."] bash scripts/run_ccl_ai.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_ccl ccl_ai --use_audio --use_image --loss_weight 0.5
