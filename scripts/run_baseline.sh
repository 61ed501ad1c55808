#!/usr/bin/env bash
# Baseline: the student alone (no distillation). UCF51 split 1, the paper's settings, on ONE
# GPU as the original's run_baseline.sh (BatchNorm over all 16 clips of a batch).
# Usage: [DATA_ROOT=dataset] [GPUS=0] [PRECISION=bf16|fp32] [EXTRA="..."] bash scripts/run_baseline.sh
GPUS=${GPUS-0}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_ccl baseline
