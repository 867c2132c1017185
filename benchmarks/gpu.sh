#!/usr/bin/env bash
# GPU benchmark (issue 18, point 6): dense rates, encoder patches/s per precision, memory
# format and batch, and end-to-end lesions/s with the GPU's wait share on a 20-study export.
# Needs a CUDA build of torch and a CUDA device; exits 3 without one. Several minutes.
# Usage: benchmarks/gpu.sh [PYTHON]     (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
export PYTHONPATH="$PWD:$PWD/tests/lib${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" || {
    echo "gpu.sh: no CUDA device (or a CPU-only torch): nothing to measure" >&2; exit 3; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" benchmarks/gpu.py
