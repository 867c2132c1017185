#!/usr/bin/env bash
# CPU smoke pre-training: synthetic cohort -> the same run in 1 and in 2 processes (gloo) ->
# first/last loss, and the two runs compared step by step. The smoke config uses
# bn_mode = "groupnorm", so a step does not depend on how the global batch (16 lesions) is
# split: step 1 must agree to float32 rounding (rel 1e-5); later steps drift apart slowly
# (LARS amplifies rounding in near-zero gradients), the maximum is printed.
# Usage: training/scripts/train_smoke.sh   (from the repository root; a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD:$PWD/training${PYTHONPATH:+:$PYTHONPATH}"
[ -f .cache/synthetic/seeds.csv ] || "$PY" -m mhub_fmcib_train.cli synthetic --config training/configs/synthetic.toml
rm -rf .cache/train_smoke/pretrain .cache/train_smoke/pretrain_1proc
"$PY" -m torch.distributed.run --nproc_per_node 2 -m mhub_fmcib_train.cli pretrain --config training/configs/smoke.toml
one=.cache/train_smoke/smoke_1proc.toml
sed -e 's#^batch_size = 8 .*#batch_size = 16#' -e 's#^output_dir = .*#output_dir = "../../.cache/train_smoke/pretrain_1proc"#' \
    -e "s#\.\./\.\./\.cache#$PWD/.cache#g" training/configs/smoke.toml > "$one"
"$PY" -m mhub_fmcib_train.cli pretrain --config "$one"
"$PY" - <<'PY'
import csv, sys
two = [float(r["loss"]) for r in csv.DictReader(open(".cache/train_smoke/pretrain/log.csv"))]
one = [float(r["loss"]) for r in csv.DictReader(open(".cache/train_smoke/pretrain_1proc/log.csv"))]
first, last = sum(two[:5]) / 5, sum(two[-5:]) / 5
print(f"first loss {two[0]:.4f} (mean of first 5: {first:.4f}); last loss {two[-1]:.4f} (mean of last 5: {last:.4f})")
rel = [abs(a - b) / abs(b) for a, b in zip(two, one)]
print(f"1 vs 2 processes: step 1 relative loss difference {rel[0]:.2e}; max over {len(rel)} steps {max(rel):.2e}")
sys.exit(0 if rel[0] <= 1e-5 else 1)
PY
