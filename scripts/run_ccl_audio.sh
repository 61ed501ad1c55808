#!/usr/bin/env bash
# CCL (A): distillation from the PANNs audio features. UCF51 split 1, the paper's settings.
# Usage: [DATA_ROOT=dataset] [GPUS=0,1] [PRECISION=bf16|fp32] [EXTRA="..."] bash scripts/run_ccl_audio.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_ccl ccl_audio --use_audio
