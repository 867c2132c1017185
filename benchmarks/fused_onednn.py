"""Issue 18, point 2: the fused CPU encoder (``mhub_fmcib.model.fused``, the default
``--cpu-encoder fused``) against the eager network, on the same real CT patches.

Each Conv3d + BatchNorm3d pair is folded into one convolution with bias (float32), its
weight re-laid out once for oneDNN, run on channels-last-3d activations with ReLU (and each
bottleneck's shortcut addition) fused; the last stage's 3x3x3 convolutions run as matrix
products. Interleaved rounds, medians, max abs difference to eager and to a float64
evaluation, the fraction of the measured float32 matmul rate, set-up seconds, and whether
a patch's features depend on its batch. History: ``benchmarks/README.md``, "Speed (issue
18), 2026-12-03" (this script held the prototype then).

Run: ``.venv/bin/python benchmarks/fused_onednn.py --batch 16 --rounds 3``
(writes ``benchmarks/out/fused_onednn.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoder_proto import GFLOP_PER_PATCH, _timed, matmul_gflops, real_patches  # noqa: E402

from mhub_fmcib.model.fused import FusedEncoder  # noqa: E402
from mhub_fmcib.model.network import FmcibResNet  # noqa: E402
from mhub_fmcib.model.weights import load_state_dict_file, write_random_weights  # noqa: E402


def random_encoder() -> FmcibResNet:
    """The encoder with the project's random weights in the published format (batch-norm
    statistics randomised too, so that folding them is exercised), eval mode."""
    with tempfile.TemporaryDirectory() as tmp:
        sd = load_state_dict_file(write_random_weights(Path(tmp) / "w.torch"))
        net = FmcibResNet()
        net.load_state_dict(sd)
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "fused_onednn.json")
    args = ap.parse_args()
    net = random_encoder()
    x = torch.from_numpy(real_patches(args.batch))
    t = time.perf_counter()
    fused = FusedEncoder(net, args.batch)
    setup_s = time.perf_counter() - t
    with torch.no_grad():
        ref = net(x)
        truth = net.double()(x.double())
        net.float()
    y = fused(x)  # first call: oneDNN primitives created
    eager_t, fused_t = [], []
    for _ in range(args.rounds):
        with torch.no_grad():
            eager_t.append(_timed(lambda: net(x)))
        fused_t.append(_timed(lambda: fused(x)))
    pair = fused(torch.cat([x[:1], x[-1:]]))  # batch 2 against the packing's batch
    mm_wall, _ = matmul_gflops(2048)
    gflop = GFLOP_PER_PATCH * args.batch
    e = statistics.median(w for w, _ in eager_t)
    f = statistics.median(w for w, _ in fused_t)
    result = {
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "matmul_gflops_wall": round(mm_wall, 1),
        "eager_s": [round(w, 3) for w, _ in eager_t],
        "fused_s": [round(w, 3) for w, _ in fused_t],
        "speedup": round(e / f, 2),
        "eager_fraction_of_matmul": round(gflop / e / mm_wall, 3),
        "fused_fraction_of_matmul": round(gflop / f / mm_wall, 3),
        "fused_patches_per_s": round(args.batch / f, 2),
        "setup_s": round(setup_s, 2),
        "feature_scale": float(ref.abs().max()),
        "max_abs_diff_to_eager": float((y - ref).abs().max()),
        "max_abs_diff_to_float64": {"fused": float((y - truth).abs().max()), "eager": float((ref - truth).abs().max())},
        "batch2_vs_full_batch_max_abs_diff": float((pair - torch.cat([y[:1], y[-1:]])).abs().max()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
