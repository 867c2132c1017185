"""The encoder on CPU as fused, pre-packed oneDNN convolutions (float32, inference only).

``FusedEncoder(net, batch)(x)``: float32 (B, 1, 50, 50, 50) -> float32 (B, 4096), the same
function as ``net(x)`` in eval mode up to float32 rounding (at most ~1.6e-6 of the feature
scale from eager and from a float64 evaluation, measured; tested, and against MONAI's).

What it does differently from the eager network (``benchmarks/fused_onednn.py``):

- each Conv3d + BatchNorm3d pair is folded into one convolution with bias (float32);
- each folded weight is re-laid out **once**, for oneDNN and the batch's input shape
  (``torch.ops.mkldnn._reorder_convolution_weight``); eager oneDNN re-lays out the 738 MB of
  weights on every forward pass. Exceptions, measured: the 1x1x1 convolutions of the last
  two stages stay plain (:data:`PLAIN_MAX_OUTPUT_VOXELS`), the last stage's 3x3x3
  convolutions run as one matrix product each (:data:`GEMM_MAX_OUTPUT_VOXELS`);
- activations stay channels-last-3d; ReLU is fused into the convolution, and each
  bottleneck's last convolution also fuses the shortcut addition and its ReLU
  (``_convolution_pointwise.binary`` with ``"add"`` + ``"relu"``).

Set-up ~0.4-0.6 s on a 2-core machine (once per run); 1.3x eager's throughput at batch 16,
about the traced and frozen graph's throughput without its ~8-13 s of set-up. The folded
weights are the only copy the extractor keeps (~0.74 GB for FMCIB).

A lesion's features do not depend on the batch it shares or on the batch the weights were
packed for: every batch of two or more gives each patch bit-identical features on the
machines measured (tested; a batch of one is padded by the extractor, see
:mod:`mhub_fmcib.model.extractor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .network import Bottleneck, FmcibResNet

_Shape = tuple[int, ...]


def fused_available() -> bool:
    """Whether this torch build has the oneDNN (mkldnn) fused convolution operators."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _triple(value: object) -> tuple[int, int, int]:
    """A convolution parameter ``(a, b, c)`` of whole numbers (not ``"same"``)."""
    if not isinstance(value, tuple) or len(value) != 3 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"expected three whole numbers, got {value!r}")
    return (value[0], value[1], value[2])


def _out_shape(conv: nn.Conv3d, in_shape: _Shape) -> _Shape:
    """Output shape (B, C_out, D, H, W) of ``conv`` for input shape (B, C_in, D, H, W)."""
    b, _, *spatial = in_shape
    pad, dil, ker, st = (_triple(v) for v in (conv.padding, conv.dilation, conv.kernel_size, conv.stride))
    sizes = [(spatial[i] + 2 * pad[i] - dil[i] * (ker[i] - 1) - 1) // st[i] + 1 for i in range(3)]
    return (b, conv.out_channels, *sizes)


def _single(value: object) -> int:
    """A pooling parameter given as ``n`` or ``(n, n, n)``, as ``n``."""
    values = value if isinstance(value, tuple) else (value,)
    if len(set(values)) != 1 or not isinstance(values[0], int):
        raise ValueError(f"expected a cubic pooling parameter, got {value!r}")
    return values[0]


@dataclass(frozen=True)
class PackedConv:
    """One Conv3d with its BatchNorm3d folded in, for oneDNN.

    ``weight``: the folded (O, I, k, k, k) weight, in oneDNN's layout for ``in_shape`` or plain;
    ``bias``: (O,) float32; ``out_shape``: (B, O, D, H, W) for ``in_shape``.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    padding: tuple[int, int, int]
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    out_shape: _Shape

    @staticmethod
    def folded(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight (O, I, k, k, k) and bias (O,) of ``bn(conv(x))`` in eval mode."""
        if bn.running_var is None or bn.running_mean is None:
            raise ValueError("batch norm without running statistics cannot be folded")
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = (conv.weight * scale.reshape(-1, 1, 1, 1, 1)).detach().contiguous()
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        return weight, bias.detach().contiguous()

    @classmethod
    def fold(cls, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape, prepack: bool = True) -> PackedConv:
        """``bn(conv(x))`` (eval mode) as one convolution for inputs of ``in_shape``, its
        weight pre-packed for that shape (or left plain: oneDNN lays it out per call)."""
        weight, bias = cls.folded(conv, bn)
        padding, stride, dilation = _triple(conv.padding), _triple(conv.stride), _triple(conv.dilation)
        packed = weight
        if prepack:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, list(padding), list(stride), list(dilation), 1, list(in_shape)
            )
        return cls(packed, bias, padding, stride, dilation, _out_shape(conv, in_shape))

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``, ``unary`` ``"none"`` or ``"relu"``; ``x`` channels-last-3d."""
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), 1, unary, [], ""
        )

    def add_relu(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + other)`` as one oneDNN primitive."""
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), 1,
            "add", 1.0, "relu", [], "",
        )  # fmt: skip


#: A 3x3x3 convolution whose output has at most this many voxels per patch runs as one
#: matrix product (:class:`GemmConv`): on the last stage (2^3 outputs) oneDNN's direct
#: convolution reached 45-60 GFLOP/s on a 2-core AMX machine, the product of the gathered
#: taps with the weight 120-150 (on the 4^3 outputs of stage 3 the gather costs more than it
#: saves; ``benchmarks/README.md``).
GEMM_MAX_OUTPUT_VOXELS = 8
#: A 1x1x1 convolution whose output has at most this many voxels per patch keeps its weight
#: plain (oneDNN lays it out on each call, ~0.1 s per forward pass in all): for these oneDNN
#: picks a weight layout that depends on the batch, so a packing for batch 16 was re-laid
#: out on every call of another batch (~0.5 s per call of 5, measured).
PLAIN_MAX_OUTPUT_VOXELS = 64


@dataclass(frozen=True)
class GemmConv:
    """A Conv3d with its BatchNorm3d folded in, as taps gathered from the padded input and
    one matrix product with the weight: ``relu?(taps @ weight + bias)``.

    ``weight``: (O, I * k^3), the folded weight's own layout (no copy); ``bias``: (O,);
    ``kernel``, ``stride``, ``padding``: cubic (voxels); ``out_shape``: (B, O, D, H, W).
    A patch's rows do not depend on the other patches of the batch (measured for the last
    stage's shapes: the product's row blocks are summed alike for every batch; tested).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    kernel: int
    stride: int
    padding: int
    out_shape: _Shape

    @classmethod
    def fold(cls, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> GemmConv:
        """``bn(conv(x))`` (eval mode) as a gathered matrix product for inputs of ``in_shape``."""
        folded = PackedConv.folded(conv, bn)
        k, st, p = (_single(_triple(v)) for v in (conv.kernel_size, conv.stride, conv.padding))
        if _triple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
            raise ValueError("only undilated, ungrouped convolutions run as a matrix product")
        weight = folded[0].reshape(conv.out_channels, -1)
        return cls(weight, folded[1], k, st, p, _out_shape(conv, in_shape))

    def _taps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) channels-last -> (B * oD * oH * oW, C * k^3), columns ordered as
        the weight's (input channel, kd, kh, kw)."""
        b, _, od, oh, ow = x.shape[0], *self.out_shape[1:]
        st, k = self.stride, self.kernel
        xp = torch.nn.functional.pad(x.permute(0, 2, 3, 4, 1), (0, 0, *(self.padding,) * 6))
        taps = [
            xp[:, i : i + st * od : st, j : j + st * oh : st, m : m + st * ow : st, :]
            for i in range(k)
            for j in range(k)
            for m in range(k)
        ]
        return torch.stack(taps, dim=-1).reshape(b * od * oh * ow, -1)

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``, ``unary`` ``"none"`` or ``"relu"``; ``x`` channels-last-3d;
        the result is channels-last-3d."""
        y = torch.addmm(self.bias, self._taps(x), self.weight.t())
        if unary == "relu":
            y.relu_()
        return self._shaped(y, x.shape[0])

    def _shaped(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        """(B * oD * oH * oW, O) -> (B, O, oD, oH, oW) channels-last-3d (a view)."""
        o, od, oh, ow = self.out_shape[1:]
        return y.reshape(batch, od, oh, ow, o).permute(0, 4, 1, 2, 3)


@dataclass(frozen=True)
class PackedBlock:
    """One bottleneck: ``relu(c3(relu(c2(relu(c1(x))))) + shortcut(x))``."""

    c1: PackedConv
    c2: PackedConv | GemmConv
    c3: PackedConv
    shortcut: PackedConv | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c2(self.c1(x, "relu"), "relu")
        return self.c3.add_relu(out, x if self.shortcut is None else self.shortcut(x))


def _pack_pointwise(conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> PackedConv:
    """A 1x1x1 ``bn(conv(x))``, pre-packed unless its output is small
    (:data:`PLAIN_MAX_OUTPUT_VOXELS`)."""
    small = math.prod(_out_shape(conv, in_shape)[2:]) <= PLAIN_MAX_OUTPUT_VOXELS
    return PackedConv.fold(conv, bn, in_shape, prepack=not small)


def _pack_spatial(conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> PackedConv | GemmConv:
    """A 3x3x3 ``bn(conv(x))``, as a matrix product when its output is small
    (:data:`GEMM_MAX_OUTPUT_VOXELS`)."""
    gemm = math.prod(_out_shape(conv, in_shape)[2:]) <= GEMM_MAX_OUTPUT_VOXELS
    return (GemmConv if gemm else PackedConv).fold(conv, bn, in_shape)


def _pack_block(blk: Bottleneck, in_shape: _Shape) -> PackedBlock:
    c1 = _pack_pointwise(blk.conv1, blk.bn1, in_shape)
    c2 = _pack_spatial(blk.conv2, blk.bn2, c1.out_shape)
    c3 = _pack_pointwise(blk.conv3, blk.bn3, c2.out_shape)
    shortcut = None
    if blk.downsample is not None:
        conv, bn = list(blk.downsample.children())
        if not isinstance(conv, nn.Conv3d) or not isinstance(bn, nn.BatchNorm3d):
            raise TypeError(f"unexpected shortcut {blk.downsample!r}")
        shortcut = _pack_pointwise(conv, bn, in_shape)
    return PackedBlock(c1, c2, c3, shortcut)


class FusedEncoder:
    """:class:`FmcibResNet` (any width or depth, eval mode) as folded oneDNN convolutions.

    Args:
        net: the network with its weights loaded; read once here and not kept.
        batch: the batch size the weights are packed for (any batch of two or more runs,
            with the same primitives).
        patch_size: edge of the cubic input patch (voxels).

    ``__call__``: float32 (B, 1, S, S, S) -> float32 (B, C) with C = ``net``'s feature count.
    """

    def __init__(self, net: FmcibResNet, batch: int, patch_size: int = 50) -> None:
        if not fused_available():
            raise RuntimeError("this torch build has no oneDNN fused convolutions")
        with torch.no_grad():
            self.stem = PackedConv.fold(net.conv1, net.bn1, (batch, 1, patch_size, patch_size, patch_size))
            pool = net.maxpool
            self.pool = (_single(pool.kernel_size), _single(pool.stride), _single(pool.padding))
            k, s, p = self.pool
            shape: _Shape = (*self.stem.out_shape[:2], *[(n + 2 * p - k) // s + 1 for n in self.stem.out_shape[2:]])
            self.blocks: list[PackedBlock] = []
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
                for blk in layer:
                    if not isinstance(blk, Bottleneck):
                        raise TypeError(f"unexpected block {type(blk).__name__}")
                    self.blocks.append(_pack_block(blk, shape))
                    shape = self.blocks[-1].c3.out_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.stem(x.contiguous(memory_format=torch.channels_last_3d), "relu")
            x = torch.max_pool3d(x, *self.pool)
            for block in self.blocks:
                x = block(x)
            return x.mean(dim=(2, 3, 4))
