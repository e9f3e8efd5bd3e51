#!/usr/bin/env bash
# The GPU check, in one call of a lent GPU machine (docs/bench.md, "On a GPU"):
#   1. the CUDA tests (tests/test_gpu.py, marker `cuda`);
#   2. the GPU benchmark (bench/gpu_bench.py): Qwen2.5-7B and -32B shapes, random weights.
# Needs only torch, triton, transformers and pytest (no install: PYTHONPATH=src).
# Everything lands in $OUT (default bench-gpu-out/): tests.log, bench.log, bench.json,
# README.md, bench-*.png.
#
#   bench/gpu-check.sh                 # on the GPU machine
#   bench/gpu-check.sh --device cpu    # the dry run here: tiny shapes, the same code paths
#                                      # (TRITON_INTERPRET=1 also runs the Triton tests on CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=cuda
SMALL=""
if [ "${1:-}" = "--device" ] && [ "${2:-}" = "cpu" ]; then DEVICE=cpu; SMALL=--small; fi
started=$(date +%s)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>/dev/null || true
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
  $PY -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not installed"
} 2>&1 | tee "$OUT/env.log"
timeout 170 $PY -m pytest -q -m cuda tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/tests.log"
echo "tests: $(( $(date +%s) - started )) s"
timeout $(( 480 - ($(date +%s) - started) )) $PY bench/gpu_bench.py --device $DEVICE $SMALL --out "$OUT" \
  --budget-s $(( 330 - ($(date +%s) - started) )) 2>&1 | tee "$OUT/bench.log" | grep -v "^|" || true
echo "total: $(( $(date +%s) - started )) s"
