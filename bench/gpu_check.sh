#!/usr/bin/env bash
# One device call (fits 10 minutes on an H100/H200): install the project, run the full-size geometry benchmark.
#   run(command="bash bench/gpu_check.sh", timeout_s=540)
# Results: $OUT/gpu_bench.json (or ./gpu_bench.json without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.}"
python -m pip install --quiet -e . 2>&1 | tail -2 || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 480 python bench/gpu_bench.py --output "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"
