#!/usr/bin/env bash
# CPU smoke pre-training: synthetic cohort -> 2-process torchrun (gloo) -> first/last loss.
# Usage: training/scripts/train_smoke.sh   (from the repository root; ~1-2 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
[ -f .cache/synthetic/seeds.csv ] || "$PY" -m mhub_fmcib_train.cli synthetic --config training/configs/synthetic.toml
rm -rf .cache/train_smoke/pretrain
"$PY" -m torch.distributed.run --nproc_per_node 2 -m mhub_fmcib_train.cli pretrain --config training/configs/smoke.toml
"$PY" - <<'PY'
import csv
rows = list(csv.DictReader(open(".cache/train_smoke/pretrain/log.csv")))
losses = [float(r["loss"]) for r in rows]
first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
print(f"first loss {losses[0]:.4f} (mean of first 5: {first:.4f}); last loss {losses[-1]:.4f} (mean of last 5: {last:.4f})")
PY
