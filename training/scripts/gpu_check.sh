#!/usr/bin/env bash
# GPU check (run on a machine with CUDA; ~3-5 min):
#  1. sync BN: one pre-training step in 2 processes with SyncBatchNorm equals the 1-process step
#     on the same global batch (sync_bn_check.py; nccl on 2+ GPUs, gloo when both ranks share
#     GPU 0) -- the check that cannot run on CPU. Fails the script if it does not hold.
#  2. bf16 pre-training steps/s of the full-size FMCIB encoder, 1 and 2 processes.
# Usage: training/scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-${OUT:-.cache/gpu_check}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
[ -f .cache/synthetic/seeds.csv ] || "$PY" -m mhub_fmcib_train.cli synthetic --config training/configs/synthetic.toml
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
BACKEND=nccl; [ "$NGPU" -ge 2 ] || BACKEND=gloo
"$PY" -m torch.distributed.run --standalone --nproc_per_node 2 training/scripts/sync_bn_check.py "$OUT" \
  --backend "$BACKEND" | tee "$OUT/sync_bn.txt"
for NPROC in 1 2; do
  cfg="$OUT/gpu_${NPROC}.toml"
  sed -e "s#^output_dir = .*#output_dir = \"$PWD/$OUT/run_${NPROC}proc\"#" \
      -e "s#\.\./\.\./\.cache#$PWD/.cache#g" training/configs/gpu_check.toml > "$cfg"
  rm -rf "$OUT/run_${NPROC}proc"
  if [ "$NPROC" -gt "$NGPU" ]; then
    # one GPU: both ranks on cuda:0 (LOCAL_RANK is remapped); nccl refuses two ranks per GPU, use gloo
    CUDA_VISIBLE_DEVICES=0 "$PY" - "$cfg" <<'PY'
import os, subprocess, sys
env = {**os.environ, "MHUB_FMCIB_TRAIN_DDP_BACKEND": "gloo"}
sys.exit(subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "training/scripts/one_gpu_ddp.py", sys.argv[1]], env=env))
PY
  else
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m mhub_fmcib_train.cli pretrain --config "$cfg"
  fi
  "$PY" - "$OUT/run_${NPROC}proc" "$NPROC" <<'PY' | tee -a "$OUT/summary.txt"
import csv, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/log.csv")))[3:]  # skip warm-up steps
step = sum(float(r["data_s"]) + float(r["compute_s"]) for r in rows) / len(rows)
data = sum(float(r["data_s"]) for r in rows) / len(rows)
print(f"{sys.argv[2]} process(es): {1 / step:.2f} steps/s, {float(rows[-1]['views_per_s']):.1f} views/s, "
      f"data wait {100 * data / step:.1f}%, loss {rows[0]['loss']} -> {rows[-1]['loss']}")
PY
done
