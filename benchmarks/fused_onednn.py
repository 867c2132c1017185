"""Prototype (issue 18, point 2): the encoder as pre-packed, fused oneDNN convolutions.

Each Conv3d + BatchNorm3d pair is folded into one convolution with bias (float32), its
weight re-laid out once by ``torch.ops.mkldnn._reorder_convolution_weight`` for the batch's
input shape, and run by ``torch.ops.mkldnn._convolution_pointwise`` on channels-last-3d
activations with the ReLU fused; each bottleneck's last convolution fuses the shortcut
addition and ReLU (``_convolution_pointwise.binary`` with ``"add"`` + ``"relu"``; the
in-place ``"sum"`` variant refuses a unary post-op, which is where the 2026-12-02
prototype went wrong). Compared here with the eager network on the same real CT patches:
interleaved rounds, medians, max abs difference, the fraction of the measured float32
matmul rate, set-up seconds, and whether a patch's features depend on its batch.

Not in the product yet: see ``benchmarks/README.md``, "Speed (issue 18), 2026-12-03".

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
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from encoder_proto import GFLOP_PER_PATCH, _timed, matmul_gflops, real_patches  # noqa: E402

from mhub_fmcib.model.network import FmcibResNet  # noqa: E402
from mhub_fmcib.model.weights import load_state_dict_file, write_random_weights  # noqa: E402

_MK = torch.ops.mkldnn
_Shape = tuple[int, ...]


class PackedConv:
    """One Conv3d with its BatchNorm3d folded in: weight (O, I, k, k, k) pre-packed for input
    shape (B, I, D, H, W); bias (O,) float32."""

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> None:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = (conv.weight * scale.reshape(-1, 1, 1, 1, 1)).detach().contiguous()
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        self.padding = [int(p) for p in conv.padding]
        self.stride = [int(s) for s in conv.stride]
        self.dilation = [int(d) for d in conv.dilation]
        self.bias = bias.detach().contiguous()
        self.weight = _MK._reorder_convolution_weight(
            weight, self.padding, self.stride, self.dilation, 1, list(in_shape)
        )
        b, _, *spatial = in_shape
        self.out_shape: _Shape = (
            b,
            conv.out_channels,
            *[
                (s + 2 * p - d * (k - 1) - 1) // st + 1
                for s, p, d, k, st in zip(
                    spatial, self.padding, self.dilation, conv.kernel_size, self.stride, strict=True
                )
            ],
        )

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        return _MK._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, 1, unary, [], ""
        )

    def add_relu(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """relu(conv(x) + other), one oneDNN primitive."""
        return _MK._convolution_pointwise.binary(
            x, other, self.weight, self.bias, self.padding, self.stride, self.dilation, 1, "add", 1.0, "relu", [], ""
        )


class FusedEncoder:
    """The FMCIB encoder (eval mode) for float32 (batch, 1, 50, 50, 50) -> (batch, 4096)."""

    def __init__(self, net: FmcibResNet, batch: int) -> None:
        self.stem = PackedConv(net.conv1, net.bn1, (batch, 1, 50, 50, 50))
        shape = self.stem.out_shape
        shape = (*shape[:2], *[(s - 1) // 2 + 1 for s in shape[2:]])  # max-pool 3, stride 2, pad 1
        self.blocks: list[tuple[PackedConv, PackedConv, PackedConv, PackedConv | None]] = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for blk in layer:
                c1 = PackedConv(blk.conv1, blk.bn1, shape)
                c2 = PackedConv(blk.conv2, blk.bn2, c1.out_shape)
                c3 = PackedConv(blk.conv3, blk.bn3, c2.out_shape)
                ds = None if blk.downsample is None else PackedConv(blk.downsample[0], blk.downsample[1], shape)
                self.blocks.append((c1, c2, c3, ds))
                shape = c3.out_shape

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.contiguous(memory_format=torch.channels_last_3d), "relu")
        x = torch.max_pool3d(x, 3, 2, 1)
        for c1, c2, c3, ds in self.blocks:
            out = c2(c1(x, "relu"), "relu")
            x = c3.add_relu(out, x if ds is None else ds(x))
        return x.mean(dim=(2, 3, 4))


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
        "batch2_vs_full_batch_max_abs_diff": float((pair - torch.cat([y[:1], y[-1:]])).abs().max()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
