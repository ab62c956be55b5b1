#!/usr/bin/env bash
# The GPU benchmark of the service worker, all configurations in one go (~6 minutes on
# an H100 or H200), for a session that has a GPU:
#
#   bash bench/gpu_service.sh            # tables on stdout and in $OUT (or bench/results)
#
# Rows: sd-turbo (the service's model: 1 step, no guidance) and SD 1.5 (25 steps, guidance),
# 512x512, 6 images, fp16, eager and torch.compile; then SD 1.5 eager in bf16. Random
# weights built from configs: no download. Each run has its own time limit, so one slow
# compilation cannot eat the others' time; a run that hits it prints "TIMED OUT".
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v .venv/bin/python || command -v python3)}
RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
LOG="$RESULTS/service_gpu.txt"
# Inductor compiles kernels in parallel; use the machine's cores.
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)}

run() {
    local limit=$1
    shift
    echo "== $* (limit ${limit}s)" | tee -a "$LOG"
    timeout "$limit" "$PYTHON" bench/service.py --device cuda "$@" 2>&1 \
        | grep -v -e "should be kept in float32" -e torchvision | tee -a "$LOG"
    local code=${PIPESTATUS[0]}
    if [ "$code" -eq 124 ]; then echo "TIMED OUT after ${limit}s" | tee -a "$LOG"; fi
    echo | tee -a "$LOG"
}

: > "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
"$PYTHON" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$LOG"
echo | tee -a "$LOG"

run 160 --config sd-turbo --dtype fp16 --compile
run 170 --config sd15 --dtype fp16 --compile
run 45 --config sd15 --dtype bf16
echo "Results in $LOG"
