#!/usr/bin/env bash
# Baseline: the student alone (no distillation). UCF51 split 1, the paper's settings.
# Usage: [DATA_ROOT=dataset] [GPUS=0,1] [EXTRA="..."] bash scripts/run_baseline.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_ccl baseline
