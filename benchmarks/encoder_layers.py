"""Issue 18, point 2: where the fused CPU encoder's time goes, layer by layer.

Runs ``mhub_fmcib.model.fused.FusedEncoder`` (the default ``--cpu-encoder fused``) on real CT
patches of the sample CT, then times each of its operations alone on the activations of
that pass (best of ``--reps``): the stem with its max-pool (in pairs of patches, as the
encoder runs them) and, per bottleneck, its three convolutions and the projection
shortcut. For each: milliseconds per batch, GFLOP (padding taps counted, as in the 25.7
GFLOP per patch of the whole encoder), GFLOP/s, and share of the sum. Also: the whole
pass, the float32 matmul rate measured alongside (the denominator of the issue's
"fraction of the matmul rate"; some convolutions run faster than it), and the cost of
writing fresh memory against reused memory (72 MB, the size of a stage-1 activation at
batch 16: large tensors come from fresh pages on every call).

Run: ``.venv/bin/python benchmarks/encoder_layers.py --batch 16``
(writes ``benchmarks/out/encoder_layers.json``; results in ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoder_proto import GFLOP_PER_PATCH, _timed, matmul_gflops, real_patches  # noqa: E402
from fused_onednn import random_encoder  # noqa: E402

from mhub_fmcib.model.fused import FusedEncoder, MatmulConv, PackedConv, TapConv, WinogradConv  # noqa: E402

T = TypeVar("T")


def best_ms(fn: Callable[[], T], reps: int) -> tuple[float, T]:
    """Best wall milliseconds of ``reps`` calls after one warm-up call, and the warm-up's result."""
    result = fn()
    return 1000 * min(_timed(fn)[0] for _ in range(reps)), result


def conv_gflop(conv: PackedConv | TapConv | WinogradConv | MatmulConv, in_channels: int) -> float:
    """GFLOP of one call (2 per multiply-add, padding taps counted, also for a
    :class:`TapConv`, which skips them, and as a direct 3x3x3 convolution for a
    :class:`WinogradConv`, which multiplies less)."""
    if isinstance(conv, TapConv):
        taps = conv.weight.shape[0] * in_channels
    elif isinstance(conv, WinogradConv):
        taps = 27 * in_channels
    elif isinstance(conv, MatmulConv):
        taps = in_channels
    else:  # a packed weight's shape is oneDNN's: every convolution here has kernel 2 * pad + 1
        taps = in_channels * (2 * conv.padding[0] + 1) ** 3
    return 2 * math.prod(conv.out_shape) * taps / 1e9


@dataclass(frozen=True)
class OpTime:
    """One operation of a pass: best wall milliseconds per batch and its GFLOP."""

    op: str
    ms: float
    gflop: float


def layer_rows(enc: FusedEncoder, x: torch.Tensor, reps: int) -> list[OpTime]:
    """One row per operation of ``enc`` on ``x`` (B, 1, 50, 50, 50), in order."""
    rows: list[OpTime] = []

    def add(name: str, gflop: float, fn: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
        ms, result = best_ms(lambda: fn(*args), reps)
        rows.append(OpTime(name, ms, gflop))
        return result

    stem_gflop = conv_gflop(enc.stem, 1) * x.shape[0] / enc.stem.out_shape[0]
    y = add(f"stem 7x7x7/2 1->{enc.stem.out_shape[1]} + max-pool 3/2", stem_gflop, enc.stem_and_pool, x)
    for i, blk in enumerate(enc.blocks):
        cin, grid = y.shape[1], "x".join(str(n) for n in blk.c2.out_shape[2:])
        name = f"block {i} c1 1x1x1 {cin}->{blk.c1.out_shape[1]} ({type(blk.c1).__name__})"
        h1 = add(name, conv_gflop(blk.c1, cin), blk.c1, y, "relu")
        name = f"block {i} c2 3x3x3 @{grid} ({type(blk.c2).__name__})"
        h2 = add(name, conv_gflop(blk.c2, h1.shape[1]), blk.c2, h1, "relu")
        short = y
        if blk.shortcut is not None:
            sc = blk.shortcut
            short = add(f"block {i} shortcut 1x1x1 {cin}->{sc.out_shape[1]}", conv_gflop(sc, cin), sc, y)
        name = f"block {i} c3 1x1x1 ->{blk.c3.out_shape[1]} +add+relu"
        # in place into the shortcut, as in the pass: timed on a copy, then run on the original
        add(name, conv_gflop(blk.c3, h2.shape[1]), blk.c3.add_relu_, h2, short.clone())
        y = blk.c3.add_relu_(h2, short)
    return rows


def fresh_vs_reused_ms(megabytes: int = 72, reps: int = 5) -> dict[str, float]:
    """Milliseconds to fill ``megabytes`` of float32: in a fresh tensor each time, and in one
    tensor reused (the difference is the page faults of fresh memory)."""
    n = megabytes * 1024 * 1024 // 4
    fresh, _ = best_ms(lambda: torch.empty(n).fill_(1.0), reps)
    buf = torch.empty(n)
    reused, _ = best_ms(lambda: buf.fill_(1.0), reps)
    return {"megabytes": megabytes, "fresh_ms": fresh, "reused_ms": reused}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "encoder_layers.json")
    a = ap.parse_args()
    net = random_encoder()
    enc = FusedEncoder(net, a.batch)
    del net
    x = torch.from_numpy(real_patches(a.batch))
    enc(x)  # warm-up
    whole = [1000 * _timed(lambda: enc(x))[0] for _ in range(a.reps)]
    rows = layer_rows(enc, x, a.reps)
    mm_wall, _ = matmul_gflops()
    total_ms = sum(r.ms for r in rows)
    gflop = a.batch * GFLOP_PER_PATCH
    ops = [
        asdict(r) | {"gflops": r.gflop / r.ms * 1000 if r.gflop else None, "share": r.ms / total_ms} for r in rows
    ]
    res = {
        "batch": a.batch,
        "threads": torch.get_num_threads(),
        "whole_pass_ms": statistics.median(whole),
        "sum_of_ops_ms": total_ms,
        "gflop_per_batch": gflop,
        "whole_gflops": gflop / statistics.median(whole) * 1000,
        "matmul_gflops": mm_wall,
        "fresh_vs_reused": fresh_vs_reused_ms(),
        "ops": ops,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(
        f"batch {a.batch}: whole pass {res['whole_pass_ms']:.0f} ms = {res['whole_gflops']:.0f} GFLOP/s "
        f"({res['whole_gflops'] / mm_wall:.0%} of the {mm_wall:.0f} GFLOP/s matmul); sum of ops {total_ms:.0f} ms"
    )
    print("fresh vs reused memory:", res["fresh_vs_reused"])
    for r in rows:
        rate = f"{r.gflop / r.ms * 1000:6.0f} GFLOP/s" if r.gflop else ""
        print(f"  {r.op:44s} {r.ms:7.1f} ms {r.ms / total_ms:6.1%} {rate}")


if __name__ == "__main__":
    main()
