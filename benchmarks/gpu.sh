#!/usr/bin/env bash
# GPU benchmark (issue 18, point 6), one short prepared run: dense fp32/bf16/fp16 matmul
# rates; encoder patches/s per precision, memory format and batch (32, auto) as a fraction of
# the dense rate, with peak memory and deviation from fp32; end-to-end lesions/s on a
# 20-study export (SR + SEG + QC) with prefetch off/on and the share of time the GPU waits
# for decoding. Needs a CUDA build of torch and a CUDA device; exits 3 without one.
# About 3-6 minutes; stopped after GPU_BENCH_TIMEOUT seconds (default 540).
# Usage: benchmarks/gpu.sh [PYTHON]     (default: .venv/bin/python); writes benchmarks/out/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
export PYTHONPATH="$PWD:$PWD/tests/lib${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" || {
    echo "gpu.sh: no CUDA device (or a CPU-only torch): nothing to measure" >&2; exit 3; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc; uptime
exec timeout "${GPU_BENCH_TIMEOUT:-540}" "$PY" benchmarks/gpu.py
