#!/usr/bin/env bash
# CCL (I): distillation from the ImageNet ResNet-34. UCF51 split 1, the paper's settings.
# Usage: [DATA_ROOT=dataset] [GPUS=0,1] [PRECISION=bf16|fp32] [EXTRA="..."] bash scripts/run_ccl_image.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_ccl ccl_image --use_image
