"""The encoder on CPU as folded convolutions: pre-packed oneDNN, matrix products on small grids (float32).

``FusedEncoder(net, batch)(x)``: float32 (B, 1, 50, 50, 50) -> float32 (B, 4096), the same
function as ``net(x)`` in eval mode up to float32 rounding (about 1e-6 of the feature scale
from eager and from a float64 evaluation, measured; tested, and against MONAI's).

What it does differently from the eager network (``benchmarks/fused_onednn.py``,
``benchmarks/encoder_layers.py``):

- each Conv3d + BatchNorm3d pair is folded into one convolution with bias (float32);
- the stem and the convolutions of stages 1-2 (and stage 3's first 1x1x1, on stage 2's
  grid) run as oneDNN convolutions whose folded weight is re-laid out **once**, for oneDNN
  and the batch's input shape (``torch.ops.mkldnn._reorder_convolution_weight``); eager
  oneDNN re-lays out the 738 MB of weights on every forward pass. ReLU is fused into the
  convolution, and each bottleneck's last convolution also fuses the shortcut addition and
  its ReLU (``_convolution_pointwise.binary`` with ``"add"`` + ``"relu"``);
- on the small grids of stages 3-4 (4^3 and 2^3 outputs) the 3x3x3 convolutions run as
  matrix products that skip the padding: stage 3's stride-1 ones by Winograd's minimal
  filtering F(2x2x2, 3x3x3) (:class:`WinogradConv`, half the multiplications there), the
  others as a sum over taps (:class:`TapConv`, :data:`TAP_MAX_OUTPUT_VOXELS`); the 1x1x1
  convolutions as matrix products (:class:`MatmulConv`, :data:`MATMUL_MAX_OUTPUT_VOXELS`);
- each bottleneck's last convolution writes into its shortcut's tensor instead of fresh
  memory, and the stem runs :data:`STEM_BATCH` patches at a time (fresh pages of large
  activations cost as much as some convolutions, measured);
- activations stay channels-last-3d throughout.

Set-up ~0.35-0.45 s on a 2-core machine (once per run). The folded weights are the only copy
the extractor keeps (~0.93 GB for FMCIB: 0.74 GB of taps, stage 3's stride-1 convolutions
held as Winograd's 64 positions instead of 27). Speed and accuracy, measured, in
``benchmarks/README.md``; the features stay within float32 rounding of a float64
evaluation of the network (tested, and against eager and MONAI's network).

A lesion's features do not depend on the batch it shares or on the batch the weights were
packed for: every batch of two or more gives each patch bit-identical features on the
machines measured (tested; a batch of one is padded by the extractor, see
:mod:`mhub_fmcib.model.extractor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
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


def _batch_norm_affine(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """(O,) scale and (O,) bias of ``bn(conv(x))`` in eval mode, as ``conv(x) * scale + bias``
    with ``conv`` without its bias."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return scale.detach(), bias.detach().contiguous()


@dataclass(frozen=True)
class PackedConv:
    """One Conv3d with its BatchNorm3d folded in, for oneDNN.

    ``weight``: the folded (O, I, k, k, k) weight, in oneDNN's layout for ``in_shape``;
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
        scale, bias = _batch_norm_affine(conv, bn)
        return (conv.weight.detach() * scale.reshape(-1, 1, 1, 1, 1)).contiguous(), bias

    @classmethod
    def fold(cls, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> PackedConv:
        """``bn(conv(x))`` (eval mode) as one convolution for inputs of ``in_shape``, its
        weight pre-packed for that shape."""
        weight, bias = cls.folded(conv, bn)
        padding, stride, dilation = _triple(conv.padding), _triple(conv.stride), _triple(conv.dilation)
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            weight, list(padding), list(stride), list(dilation), 1, list(in_shape)
        )
        return cls(packed, bias, padding, stride, dilation, _out_shape(conv, in_shape))

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``, ``unary`` ``"none"`` or ``"relu"``; ``x`` channels-last-3d."""
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), 1, unary, [], ""
        )

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``other = relu(conv(x) + other)`` in place, as one oneDNN primitive; returns
        ``other`` (channels-last-3d, of the output's shape). Written into ``other`` rather
        than fresh memory: on stage 1 a fresh 72 MB output cost 45 ms per call against 26
        ms in place (page faults; batch 16, 2-core AMD Zen 4, bit-identical results)."""
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            other, x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), 1,
            "add", 1.0, "relu", [], "",
        )  # fmt: skip


#: A 3x3x3 convolution whose output has at most this many voxels per patch runs as a sum
#: over its taps (:class:`TapConv`): on stage 3 (4^3 outputs, 58 % of the taps inside the
#: volume) and stage 4 (2^3, 30 %) oneDNN's direct convolution multiplies the padding too.
#: Measured at batch 16 (``benchmarks/README.md``): on a 2-core Intel AMX machine 61-73 ms
#: per stage-3 call (oneDNN 97-120) and 36-49 ms on stage 4 (oneDNN 70-72); on a 2-core
#: AMD Zen 4 machine 24-40 ms on stage 4 (the earlier gathered product 52-54) and 51-67 ms
#: on stage 3 (oneDNN 50-52).
TAP_MAX_OUTPUT_VOXELS = 64
#: A 1x1x1 convolution whose output has at most this many voxels per patch runs as a matrix
#: product (:class:`MatmulConv`). For these oneDNN picks a weight layout that depends on the
#: batch (a packing for batch 16 was re-laid out on every call of another batch, ~0.5 s per
#: call of 5), and with a plain weight it re-lays it out on every call: on stage 4 the
#: product took 8-17 ms per call at batch 16 against oneDNN's 13-41 (AMD Zen 4).
MATMUL_MAX_OUTPUT_VOXELS = 64
#: The inner dimension (input channels) of :class:`MatmulConv`'s product is summed in
#: chunks of this many: in one product of K = 1024 or 2048 the BLAS splits K differently
#: for different batch sizes (a patch's features then moved by up to 1e-4 with its batch,
#: measured); in chunks of 512 every batch sums alike, at the same speed within noise.
MATMUL_K_CHUNK = 512
#: Every matrix product of :class:`MatmulConv` and :class:`TapConv` has at least this many
#: rows (fewer are padded with zero rows): MKL computes a product of fewer than 12 rows,
#: other than 4 or 8, with other kernels, so a patch's rows came out differently (by up to
#: 7e-4) than in a larger product (2 threads, AVX-512 AMD machine, measured for every row
#: count 1-129 and the stages' shapes); from 12 rows up each row came out alike.
MIN_PRODUCT_ROWS = 16


def _matmul(
    rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, k_chunk: int | None = None
) -> torch.Tensor:
    """``rows @ weight.t() (+ bias)``: (M, K) x (N, K) -> (M, N), or without bias a batch of
    products (P, M, K) x (P, N, K) -> (P, M, N); each product of at least
    :data:`MIN_PRODUCT_ROWS` rows (zero rows appended, then dropped) with K summed in chunks
    of ``k_chunk`` (all at once without), so that each row's result does not depend on the
    other rows."""
    m, k = rows.shape[-2:]
    if m < MIN_PRODUCT_ROWS:
        rows = torch.nn.functional.pad(rows, (0, 0, 0, MIN_PRODUCT_ROWS - m))
    step, w = k_chunk or k, weight.transpose(-1, -2)
    first = rows[..., :step], w[..., :step, :]
    if rows.dim() == 3:  # a batch of products, (P, M, K) x (P, N, K) -> (P, M, N)
        if bias is not None:
            raise ValueError("a batch of products takes no bias")
        y = torch.bmm(*first)
        for lo in range(step, k, step):
            y.baddbmm_(rows[..., lo : lo + step], w[..., lo : lo + step, :])
        return y[:, :m]
    y = torch.mm(*first) if bias is None else torch.addmm(bias, *first)
    for lo in range(step, k, step):
        y.addmm_(rows[:, lo : lo + step], w[lo : lo + step])
    return y[:m]


def _flat(x: torch.Tensor) -> torch.Tensor:
    """Channels-last-3d (B, C, D, H, W) -> (B * D * H * W, C): a view where the memory
    allows, else a copy."""
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])


def _channels_last(y: torch.Tensor, out_shape: _Shape, batch: int) -> torch.Tensor:
    """(B * D * H * W, O) row-major -> (B, O, D, H, W) channels-last-3d (a view)."""
    o, d, h, w = out_shape[1:]
    return y.view(batch, d, h, w, o).permute(0, 4, 1, 2, 3)


@dataclass(frozen=True)
class MatmulConv:
    """A 1x1x1 Conv3d with its BatchNorm3d folded in, as one matrix product of the input's
    channel rows with the weight: ``relu?(x @ weight + bias)``, the inner dimension summed in
    chunks of :data:`MATMUL_K_CHUNK`.

    ``weight``: (O, I) float32, the folded weight's own layout (no copy); ``bias``: (O,);
    ``stride``: cubic (voxels); ``out_shape``: (B, O, D, H, W). With K chunked and at least :data:`MIN_PRODUCT_ROWS`
    rows, a patch's rows do not depend on the other rows of the product (tested), so its
    features do not depend on its batch.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    out_shape: _Shape

    @classmethod
    def fold(cls, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> MatmulConv:
        """``bn(conv(x))`` (eval mode), a 1x1x1 convolution, for inputs of ``in_shape``."""
        weight, bias = PackedConv.folded(conv, bn)
        if _single(_triple(conv.kernel_size)) != 1 or _single(_triple(conv.padding)) != 0 or conv.groups != 1:
            raise ValueError("only ungrouped 1x1x1 convolutions without padding run as a matrix product")
        stride = _single(_triple(conv.stride))
        return cls(weight.reshape(conv.out_channels, -1), bias, stride, _out_shape(conv, in_shape))

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        """(B * D * H * W, O): ``x @ weight + bias`` for channels-last-3d ``x``."""
        s = self.stride
        return _matmul(_flat(x if s == 1 else x[:, :, ::s, ::s, ::s]), self.weight, self.bias, MATMUL_K_CHUNK)

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``, ``unary`` ``"none"`` or ``"relu"``; ``x`` and the result
        channels-last-3d."""
        y = self._product(x)
        if unary == "relu":
            y.relu_()
        return _channels_last(y, self.out_shape, x.shape[0])

    def add_relu_(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``other = relu(conv(x) + other)`` in place; returns ``other`` (contiguous
        channels-last-3d, of the output's shape)."""
        flat = other.permute(0, 2, 3, 4, 1).view(-1, other.shape[1])  # a view: written through
        flat.add_(self._product(x)).relu_()
        return other


def _tap_range(size: int, out: int, tap: int, stride: int, pad: int) -> tuple[int, int]:
    """The outputs ``[lo, hi)`` along one axis whose input ``stride * o + tap - pad`` lies
    inside ``[0, size)`` (``lo == hi``: none)."""
    lo = max(0, -((tap - pad) // stride))
    hi = min(out, (size - 1 - tap + pad) // stride + 1)
    return lo, max(lo, hi)


#: :func:`_per_tap` re-lays out the weight this many output channels at a time: the
#: blocks' rows stay in cache, which halved the time for stage 4's 113 MB weights (0.12 s
#: to 0.065 s, measured; blocks of 8 to 128 alike).
_TAP_LAYOUT_ROWS = 32


def _per_tap(conv: nn.Conv3d, scale: torch.Tensor) -> torch.Tensor:
    """``conv``'s weight times the (O,) batch-norm ``scale`` as (k^3, O, I) float32,
    contiguous, taps in (kd, kh, kw) order, scaled straight into that layout in one pass over
    the weight (an (k^3, I, O) layout took four times as long, measured)."""
    o, i = conv.out_channels, conv.in_channels
    out = torch.empty(math.prod(_triple(conv.kernel_size)), o, i, dtype=conv.weight.dtype)
    src = conv.weight.detach().reshape(o, i, -1)
    scale = scale.reshape(1, o, 1)
    for lo in range(0, o, _TAP_LAYOUT_ROWS):
        rows = slice(lo, lo + _TAP_LAYOUT_ROWS)
        torch.mul(src[rows].permute(2, 0, 1), scale[:, rows], out=out[:, rows])
    return out


@dataclass(frozen=True)
class Tap:
    """One tap of a :class:`TapConv`: its index in (kd, kh, kw) order, the input voxels it
    reads (D, H, W slices, strided) and the outputs they reach (D, H, W slices)."""

    index: int
    inputs: tuple[slice, slice, slice]
    outputs: tuple[slice, slice, slice]
    full: bool


def tap_plan(kernel: int, stride: int, padding: int, in_size: _Shape, out_size: _Shape) -> tuple[Tap, ...]:
    """The taps of a cubic convolution that reach any output, for spatial input size
    ``in_size`` and output size ``out_size`` (D, H, W voxels); those that reach every
    output first, then in (kd, kh, kw) order."""
    taps = []
    for t in range(kernel**3):
        offsets = (t // (kernel * kernel), (t // kernel) % kernel, t % kernel)
        spans = [_tap_range(n, o, tap, stride, padding) for n, o, tap in zip(in_size, out_size, offsets, strict=True)]
        if any(hi == lo for lo, hi in spans):
            continue
        ins = [slice(stride * lo + tap - padding, stride * (hi - 1) + tap - padding + 1, stride)
               for (lo, hi), tap in zip(spans, offsets, strict=True)]  # fmt: skip
        outs = [slice(lo, hi) for lo, hi in spans]
        full = all(hi - lo == o for (lo, hi), o in zip(spans, out_size, strict=True))
        taps.append(Tap(t, (ins[0], ins[1], ins[2]), (outs[0], outs[1], outs[2]), full))
    return tuple(sorted(taps, key=lambda tap: (not tap.full, tap.index)))


@dataclass(frozen=True)
class TapConv:
    """A k x k x k Conv3d with its BatchNorm3d folded in, as a sum over its taps: for each
    tap, the input voxels it reads inside the volume (rows of I channels) times the tap's
    (O, I) weight, transposed, added into the outputs they reach. The padding is never multiplied.

    ``weight``: (k^3, O, I) float32, contiguous, taps in (kd, kh, kw) order; ``bias``: (O,);
    ``taps``: the plan (:func:`tap_plan`), its first tap reaching every output;
    ``out_shape``: (B, O, D, H, W) for the input shape it was built for (any batch runs).
    Each product's rows are one patch's voxels and the taps are summed in a fixed order, so
    a patch's result does not depend on its batch (tested).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    taps: tuple[Tap, ...]
    out_shape: _Shape

    @classmethod
    def fold(cls, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> TapConv:
        """``bn(conv(x))`` (eval mode) as a sum over taps for inputs of ``in_shape``."""
        k, st, p = (_single(_triple(v)) for v in (conv.kernel_size, conv.stride, conv.padding))
        if _triple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
            raise ValueError("only undilated, ungrouped convolutions run as a sum over taps")
        scale, bias = _batch_norm_affine(conv, bn)
        out_shape = _out_shape(conv, in_shape)
        taps = tap_plan(k, st, p, in_shape[2:], out_shape[2:])
        if not taps or not taps[0].full:
            raise ValueError(f"no tap of a {k}-wide kernel with padding {p} reaches every output")
        return cls(_per_tap(conv, scale), bias, taps, out_shape)

    def _product(self, xl: torch.Tensor, tap: Tap, bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d, h, w, O): the voxels of ``xl`` (B, D, H, W, I) that ``tap`` reads, times its
        weight (+ ``bias``), for the outputs it reaches."""
        block = xl[:, tap.inputs[0], tap.inputs[1], tap.inputs[2]]
        y = _matmul(block.reshape(-1, block.shape[-1]), self.weight[tap.index], bias)
        return y.view(*block.shape[:4], y.shape[1])

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``, ``unary`` ``"none"`` or ``"relu"``; ``x`` and the result
        channels-last-3d."""
        xl = x.permute(0, 2, 3, 4, 1)  # (B, D, H, W, C)
        first, *rest = self.taps
        out = self._product(xl, first, self.bias)  # the first tap reaches every output
        for tap in rest:
            out[:, tap.outputs[0], tap.outputs[1], tap.outputs[2]].add_(self._product(xl, tap))
        if unary == "relu":
            out.relu_()
        return out.permute(0, 4, 1, 2, 3)


#: Winograd's F(2, 3) (Lavin & Gray 2016), per axis: a 2-output tile of a 3-tap filter
#: from a 4-input window, ``A^T [(G g) * (B^T d)]``, 4 multiplications for 6. In 3D the
#: axes compose: 64 products per 2x2x2 output tile instead of 8 x 27. Entries 0, +-1 and
#: +-1/2 only, so the transforms add no rounding beyond a few float32 additions.
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
#: A 3x3x3 stride-1 convolution on a small grid (:data:`TAP_MAX_OUTPUT_VOXELS`) runs as
#: :class:`WinogradConv` when it multiplies at most this share of what :class:`TapConv`
#: would (Winograd 64 per 2x2x2 tile, the taps one per tap inside the volume and output).
#: Measured at batch 16 on a 2-core AMD Zen 4 machine: stage 3 (4^3 outputs, 512 against
#: 1000 per channel pair) 30-32 ms per call against the taps' 46-51; stage 4 (2^3, 64
#: against 64) 29 ms against 21-26, so it stays a sum over taps.
WINOGRAD_MAX_PRODUCT_SHARE = 0.75


def _winograd_input(x: torch.Tensor, dim: int, tiles: int) -> torch.Tensor:
    """``B^T d`` along ``dim`` of ``x`` (length ``2 * tiles + 2``, windows of 4 at stride
    2): the result has that axis as ``tiles`` and a new leading axis of the 4 transformed
    positions."""

    def window(k: int) -> torch.Tensor:  # element k of every tile's window
        return x[(slice(None),) * dim + (slice(k, k + 2 * tiles - 1, 2),)]

    d0, d1, d2, d3 = (window(k) for k in range(4))
    out = x.new_empty((4, *d0.shape))
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])
    return out


def _winograd_weight(conv: nn.Conv3d, scale: torch.Tensor) -> torch.Tensor:
    """``G g G^T`` for each (o, i) of ``conv``'s 3x3x3 weight, times the (O,) batch-norm
    ``scale``: (64, O, I) float32, positions in (d, h, w) order. One product of the (64, 27)
    transform (products of :data:`_WINOGRAD_G`'s entries, exact in float32) with the
    weight's taps, read in the weight's own layout; then the scale."""
    g = torch.tensor(_WINOGRAD_G, dtype=conv.weight.dtype)
    o, i = conv.out_channels, conv.in_channels
    u = torch.mm(torch.kron(g, torch.kron(g, g)), conv.weight.detach().reshape(o * i, 27).t())
    return u.view(64, o, i).mul_(scale.reshape(1, o, 1))


def _winograd_output(m: torch.Tensor, dim: int) -> torch.Tensor:
    """``A^T m`` along ``dim`` of ``m`` (the 4 transformed positions): that axis goes, and a
    new leading axis holds the tile's 2 outputs."""
    m0, m1, m2, m3 = m.unbind(dim)
    out = m.new_empty((2, *m0.shape))
    torch.add(m0, m1, out=out[0]).add_(m2)
    torch.sub(m1, m2, out=out[1]).sub_(m3)
    return out


def winograd_products(out_size: _Shape) -> int:
    """How many (I, O) channel products :class:`WinogradConv` computes per patch for an
    output grid of ``out_size`` (D, H, W voxels): 64 per 2x2x2 tile."""
    return 64 * math.prod((n + 1) // 2 for n in out_size)


def tap_products(plan: tuple[Tap, ...]) -> int:
    """How many (I, O) channel products :class:`TapConv` computes per patch for ``plan``:
    one per tap and output it reaches."""
    return sum(math.prod(s.stop - s.start for s in tap.outputs) for tap in plan)


@dataclass(frozen=True)
class WinogradConv:
    """A 3x3x3 stride-1 Conv3d (padding 1) with its BatchNorm3d folded in, by Winograd's
    minimal filtering F(2x2x2, 3x3x3): the output in 2x2x2 tiles, each from a 4x4x4 input
    window; the window and the weight transformed (``B^T d B``, ``G g G^T`` per axis), 64
    matrix products of (tiles, I) rows with the (I, O) transformed weights, and the tile
    transformed back (``A^T m A``). On stage 3's 4^3 grid that is 512 products per channel
    pair where the sum over taps needs 1000 (:data:`WINOGRAD_MAX_PRODUCT_SHARE`).

    ``weight``: (64, O, I) float32, the transformed folded weight
    (:func:`_winograd_weight`), positions in (d, h, w) order; ``bias``: (O,);
    ``out_shape``: (B, O, D, H, W) for the input shape it was built for (any batch runs).
    Each product's rows are the tiles of the batch's patches, at least
    :data:`MIN_PRODUCT_ROWS`, K chunked as in :func:`_matmul`, so a patch's result does not
    depend on its batch (tested). Against a float64 evaluation it is as close as the
    direct convolutions: on the full network 6.6e-5 at feature scale 67 (taps 6.5e-5).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    out_shape: _Shape

    @classmethod
    def fold(cls, conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> WinogradConv:
        """``bn(conv(x))`` (eval mode), a 3x3x3 stride-1 convolution with padding 1, for
        inputs of ``in_shape``."""
        k, st, p = (_single(_triple(v)) for v in (conv.kernel_size, conv.stride, conv.padding))
        if (k, st, p) != (3, 1, 1) or _triple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
            raise ValueError("only ungrouped 3x3x3 convolutions of stride 1 and padding 1 run as Winograd's F(2, 3)")
        scale, bias = _batch_norm_affine(conv, bn)
        return cls(_winograd_weight(conv, scale), bias, _out_shape(conv, in_shape))

    def _tiles(self, x: torch.Tensor) -> torch.Tensor:
        """(64, B * T^3, I): the transformed 4x4x4 windows of channels-last-3d ``x``, T
        tiles per axis, positions in (d, h, w) order, tiles in (B, D, H, W) order."""
        c, *size = x.shape[1:]
        t = [(n + 1) // 2 for n in size]
        pads = [(1, 2 * ti + 1 - n) for ti, n in zip(t, size, strict=True)]
        v = torch.nn.functional.pad(x.permute(0, 2, 3, 4, 1), (0, 0, *pads[2], *pads[1], *pads[0]))
        for axis in (2, 1, 0):  # W, then H, then D: each comes out as the leading axis
            v = _winograd_input(v, 3, t[axis])  # (B, D, H, W, I) -> ... -> (4d, 4h, 4w, B, Td, Th, Tw, I)
        return v.view(64, -1, c)

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``, ``unary`` ``"none"`` or ``"relu"``; ``x`` and the result
        channels-last-3d."""
        b, o, *size = x.shape[0], *self.out_shape[1:]
        t = [(n + 1) // 2 for n in size]
        m = _matmul(self._tiles(x), self.weight, k_chunk=MATMUL_K_CHUNK)  # (64, B * T^3, O)
        z = m.view(4, 4, 4, b, *t, o)
        for _ in range(3):  # w, then h, then d: each comes out as the leading axis
            z = _winograd_output(z, 2)  # ... -> (2d, 2h, 2w, B, Td, Th, Tw, O)
        y = torch.empty(b, t[0], 2, t[1], 2, t[2], 2, o, dtype=x.dtype)
        torch.add(z.permute(3, 4, 0, 5, 1, 6, 2, 7), self.bias, out=y)
        if unary == "relu":
            y.relu_()
        y5 = y.view(b, 2 * t[0], 2 * t[1], 2 * t[2], o)
        if [2 * n for n in t] != size:  # odd grids: the last tile's second output is past the edge
            y5 = y5[:, : size[0], : size[1], : size[2]].contiguous()
        return y5.permute(0, 4, 1, 2, 3)


@dataclass(frozen=True)
class PackedBlock:
    """One bottleneck: ``relu(c3(relu(c2(relu(c1(x))))) + shortcut(x))``, written into
    ``x`` where the shortcut is the identity (the block's input is not used after it)."""

    c1: PackedConv | MatmulConv
    c2: PackedConv | TapConv | WinogradConv
    c3: PackedConv | MatmulConv
    shortcut: PackedConv | MatmulConv | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c2(self.c1(x, "relu"), "relu")
        return self.c3.add_relu_(out, x if self.shortcut is None else self.shortcut(x))


def _pack_pointwise(conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> PackedConv | MatmulConv:
    """A 1x1x1 ``bn(conv(x))``: a matrix product when its output is small
    (:data:`MATMUL_MAX_OUTPUT_VOXELS`), else pre-packed for oneDNN."""
    small = math.prod(_out_shape(conv, in_shape)[2:]) <= MATMUL_MAX_OUTPUT_VOXELS
    return (MatmulConv if small else PackedConv).fold(conv, bn, in_shape)


def _winograd_pays(conv: nn.Conv3d, in_shape: _Shape) -> bool:
    """Whether Winograd's F(2, 3) multiplies at most :data:`WINOGRAD_MAX_PRODUCT_SHARE` of
    what the sum over taps would for ``conv`` on inputs of ``in_shape``."""
    k, st, p = (_single(_triple(v)) for v in (conv.kernel_size, conv.stride, conv.padding))
    if (k, st, p) != (3, 1, 1) or _triple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
        return False
    out = _out_shape(conv, in_shape)[2:]
    plan = tap_plan(k, st, p, in_shape[2:], out)
    return winograd_products(out) <= WINOGRAD_MAX_PRODUCT_SHARE * tap_products(plan)


def _pack_spatial(conv: nn.Conv3d, bn: nn.BatchNorm3d, in_shape: _Shape) -> PackedConv | TapConv | WinogradConv:
    """A 3x3x3 ``bn(conv(x))``: on a small output (:data:`TAP_MAX_OUTPUT_VOXELS`),
    Winograd's F(2, 3) where it pays (:func:`_winograd_pays`) and else a sum over taps;
    on larger ones pre-packed for oneDNN."""
    if math.prod(_out_shape(conv, in_shape)[2:]) > TAP_MAX_OUTPUT_VOXELS:
        return PackedConv.fold(conv, bn, in_shape)
    return (WinogradConv if _winograd_pays(conv, in_shape) else TapConv).fold(conv, bn, in_shape)


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


#: The stem and the max-pool run this many patches at a time (a batch's odd one alone, with
#: weights packed for one): the stem's output for 16 patches (128 MB) came from fresh
#: pages on every call, and per pair it stays small. Stem + max-pool measured 134-142 ms
#: per 16 patches in pairs against 179-192 ms at once (2-core AMD Zen 4, bit-identical).
STEM_BATCH = 2


class FusedEncoder:
    """:class:`FmcibResNet` (any width or depth, eval mode) as folded oneDNN convolutions.

    Args:
        net: the network with its weights loaded; read once here and not kept.
        batch: the batch size the weights are packed for (any batch of two or more runs,
            with the same primitives).
        patch_size: edge of the cubic input patch (voxels).
        release: called with the stem's and then each block's tensors once they are folded
            (the extractor gives back their pages of the memory-mapped weights file, so that
            the file and the folded copy are not both resident: ``mapped.py``).

    ``__call__``: float32 (B, 1, S, S, S) -> float32 (B, C) with C = ``net``'s feature count.
    """

    def __init__(
        self,
        net: FmcibResNet,
        batch: int,
        patch_size: int = 50,
        release: Callable[[Iterable[torch.Tensor]], object] | None = None,
    ) -> None:
        if not fused_available():
            raise RuntimeError("this torch build has no oneDNN fused convolutions")

        def folded(*modules: nn.Module) -> None:
            if release is not None:
                release(t for m in modules for t in (*m.parameters(), *m.buffers()))

        with torch.no_grad():
            size = (1, patch_size, patch_size, patch_size)
            self.stem = PackedConv.fold(net.conv1, net.bn1, (STEM_BATCH, *size))
            self.stem_one = PackedConv.fold(net.conv1, net.bn1, (1, *size))
            folded(net.conv1, net.bn1)
            pool = net.maxpool
            self.pool = (_single(pool.kernel_size), _single(pool.stride), _single(pool.padding))
            k, s, p = self.pool
            pooled = [(n + 2 * p - k) // s + 1 for n in self.stem.out_shape[2:]]
            shape: _Shape = (batch, self.stem.out_shape[1], *pooled)
            self.blocks: list[PackedBlock] = []
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
                for blk in layer:
                    if not isinstance(blk, Bottleneck):
                        raise TypeError(f"unexpected block {type(blk).__name__}")
                    self.blocks.append(_pack_block(blk, shape))
                    folded(blk)
                    shape = self.blocks[-1].c3.out_shape

    def stem_and_pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S, S) -> the max-pooled stem output (B, C, D, H, W), channels-last-3d,
        :data:`STEM_BATCH` patches at a time."""
        x = x.contiguous(memory_format=torch.channels_last_3d)
        parts = []
        for lo in range(0, x.shape[0], STEM_BATCH):
            part = x[lo : lo + STEM_BATCH]
            stem = self.stem if part.shape[0] == STEM_BATCH else self.stem_one
            parts.append(torch.max_pool3d(stem(part, "relu"), *self.pool))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.stem_and_pool(x)
            for block in self.blocks:
                x = block(x)
            return x.mean(dim=(2, 3, 4))
