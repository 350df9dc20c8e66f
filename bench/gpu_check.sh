#!/usr/bin/env bash
# The full-size geometry benchmark on one GPU, in under 10 minutes on an H100/H200: installs the project, then runs
# bench/gpu_bench.py. Results: $OUT/gpu_bench.json and gpu_bench.log ($OUT defaults to the current folder).
#   bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.}"
python -m pip install --quiet -e . 2>&1 | tail -2 || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 480 python bench/gpu_bench.py --output "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"
