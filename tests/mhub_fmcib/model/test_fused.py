"""The fused CPU encoder on its own (``mhub_fmcib.model.fused``): a narrow network with
randomised batch-norm statistics, so that every folding path runs in seconds. The
full-size network is checked in ``test_network.py`` (against float64, eager and MONAI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mhub_fmcib.model.fused import (
    _WINOGRAD_G,
    STEM_BATCH,
    FusedEncoder,
    MatmulConv,
    PackedConv,
    TapConv,
    WinogradConv,
    _winograd_pays,
    _winograd_weight,
    fused_available,
    tap_plan,
    tap_products,
    winograd_products,
)
from mhub_fmcib.model.network import FmcibResNet

pytestmark = pytest.mark.skipif(not fused_available(), reason="torch without oneDNN")


def _narrow_net() -> FmcibResNet:
    """FMCIB's layout at 1/8 width with batch-norm statistics and affine terms drawn at
    random (folding them is what is tested), eval mode."""
    torch.manual_seed(4)
    net = FmcibResNet(widen_factor=0.25)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
        if isinstance(m, nn.Conv3d) and m.bias is not None:
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def _patches(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(0.2, 0.3, size=(n, 1, 50, 50, 50)).astype(np.float32))


def test_every_folding_path_runs() -> None:
    """The narrow network uses every kind where the real one does: packed oneDNN
    convolutions on stages 1-2, Winograd's F(2, 3) for stage 3's stride-1 3x3x3
    convolutions, sums over taps for stage 3's strided one and on stage 4, matrix
    products for the 1x1x1 convolutions of stages 3-4 (with and without stride)."""
    enc = FusedEncoder(_narrow_net(), batch=4)
    kinds = [[type(c).__name__ for c in (b.c1, b.c2, b.c3, b.shortcut) if c is not None] for b in enc.blocks]
    assert kinds[:7] == [["PackedConv"] * (4 if i in (0, 3) else 3) for i in range(7)]
    assert kinds[7] == ["PackedConv", "TapConv", "MatmulConv", "MatmulConv"]  # c1 on stage 2's 8^3 grid
    assert all(k == ["MatmulConv", "WinogradConv", "MatmulConv"] for k in kinds[8:13])
    assert kinds[13] == ["MatmulConv", "TapConv", "MatmulConv", "MatmulConv"]
    assert all(k == ["MatmulConv", "TapConv", "MatmulConv"] for k in kinds[14:])
    assert all(b.c1.weight.layout == torch._mkldnn for b in enc.blocks[:8])  # type: ignore[attr-defined,union-attr]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, seed: int) -> tuple[nn.Conv3d, nn.BatchNorm3d]:
    torch.manual_seed(seed)
    conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    bn = nn.BatchNorm3d(cout).eval()
    bn.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
    bn.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    bn.bias.data.uniform_(-0.2, 0.2)
    return conv, bn


def _check_small_grid_conv(
    cls: type[TapConv] | type[WinogradConv], conv_bn: tuple[nn.Conv3d, nn.BatchNorm3d], size: int, atol: float
) -> None:
    """``cls`` folded from ``conv_bn`` equals PyTorch's convolution + batch norm evaluated
    in float64 within ``atol``, with and without ReLU, on a batch of 3 ``size``^3 inputs;
    its output is channels-last-3d of its recorded shape."""
    conv, bn = conv_bn
    x = torch.randn(3, conv.in_channels, size, size, size).contiguous(memory_format=torch.channels_last_3d)
    packed = cls.fold(conv, bn, tuple(x.shape))
    with torch.no_grad():
        truth = bn.double()(conv.double()(x.double()))
        got, relu = packed(x), packed(x, "relu")
    assert got.shape == truth.shape == packed.out_shape
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_allclose(got.double().numpy(), truth.numpy(), rtol=0, atol=atol)
    np.testing.assert_allclose(relu.double().numpy(), truth.clamp(min=0).numpy(), rtol=0, atol=atol)


@pytest.mark.parametrize(("size", "stride"), [(4, 1), (8, 2), (2, 1), (4, 2), (5, 2), (3, 1)])
def test_tap_conv_is_the_convolution(size: int, stride: int) -> None:
    """A sum over taps equals PyTorch's convolution + batch norm evaluated in float64, with
    and without ReLU, on the grids of stages 3-4 and on odd ones."""
    _check_small_grid_conv(TapConv, _conv_bn(24, 40, 3, stride, seed=size), size, atol=1e-5)


def test_tap_plan_skips_the_padding() -> None:
    """On a 4^3 grid all 27 taps reach some output, only the centre reaches all of them and
    the plan's products cover exactly the taps inside the volume (10 per axis of 12); with
    stride 2 from 4^3 to 2^3, the 8 taps of offsets 0 and +1 reach every output."""
    plan = tap_plan(3, 1, 1, (4, 4, 4), (4, 4, 4))
    assert len(plan) == 27 and plan[0].index == 13 and [t.full for t in plan].count(True) == 1
    valid = sum(
        (t.outputs[0].stop - t.outputs[0].start) * (t.outputs[1].stop - t.outputs[1].start)
        * (t.outputs[2].stop - t.outputs[2].start)
        for t in plan
    )  # fmt: skip
    assert valid == 10**3  # (4 + 3 + 3) per axis: the products with voxels inside the volume
    strided = tap_plan(3, 2, 1, (4, 4, 4), (2, 2, 2))
    assert [t.full for t in strided].count(True) == 8 and len(strided) == 27


@pytest.mark.parametrize("size", [4, 3, 5, 2, 1])
def test_winograd_conv_is_the_convolution(size: int) -> None:
    """Winograd's F(2x2x2, 3x3x3) equals PyTorch's convolution + batch norm evaluated in
    float64, with and without ReLU, on stage 3's grid and on odd ones (the last tile
    half outside)."""
    _check_small_grid_conv(WinogradConv, _conv_bn(24, 40, 3, 1, seed=10 + size), size, atol=2e-6)


def test_winograd_weight_is_g_g_gt() -> None:
    """The transformed weight equals ``G g G^T`` per axis, evaluated in float64 axis by
    axis (an independent route from the (64, 27) product), times the batch-norm scale."""
    conv, _ = _conv_bn(8, 6, 3, 1, seed=3)
    scale = torch.rand(6) + 0.5
    g = torch.tensor(_WINOGRAD_G, dtype=torch.float64)
    w = conv.weight.detach().double() * scale.double().reshape(-1, 1, 1, 1, 1)
    truth = torch.einsum("ap,bq,cr,oipqr->abcoi", g, g, g, w).reshape(64, 6, 8)
    np.testing.assert_allclose(_winograd_weight(conv, scale).double().numpy(), truth.numpy(), rtol=0, atol=1e-6)


def test_winograd_runs_where_it_multiplies_less() -> None:
    """On a 4^3 grid Winograd multiplies 8 tiles x 64 = 512 channel pairs against the taps'
    1000, so it runs there; on 2^3 (64 against 64) and 3^3 (512 against 343) the taps stay,
    as they do for strided and 1x1x1 convolutions."""
    assert winograd_products((4, 4, 4)) == 512 and tap_products(tap_plan(3, 1, 1, (4,) * 3, (4,) * 3)) == 1000
    assert winograd_products((2, 2, 2)) == 64 == tap_products(tap_plan(3, 1, 1, (2,) * 3, (2,) * 3))
    assert winograd_products((3, 3, 3)) == 512 > tap_products(tap_plan(3, 1, 1, (3,) * 3, (3,) * 3)) == 343
    conv3, _ = _conv_bn(8, 8, 3, 1, seed=1)
    strided, _ = _conv_bn(8, 8, 3, 2, seed=1)
    assert _winograd_pays(conv3, (2, 8, 4, 4, 4))
    assert not _winograd_pays(conv3, (2, 8, 2, 2, 2)) and not _winograd_pays(conv3, (2, 8, 3, 3, 3))
    assert not _winograd_pays(strided, (2, 8, 8, 8, 8))
    with pytest.raises(ValueError, match="stride 1 and padding 1"):
        WinogradConv.fold(strided, nn.BatchNorm3d(8).eval(), (2, 8, 8, 8, 8))


def test_add_relu_writes_into_the_other_operand() -> None:
    """The last convolution of a block adds its shortcut in place: the result is the
    shortcut's tensor, holding ``relu(conv(x) + shortcut)`` (float64 truth), for the packed
    oneDNN and the matrix-product kinds."""
    for grid, kind in ((8, PackedConv), (2, MatmulConv)):
        conv, bn = _conv_bn(16, 32, 1, 1, seed=grid)
        x = torch.rand(3, 16, grid, grid, grid).contiguous(memory_format=torch.channels_last_3d)
        other = torch.randn(3, 32, grid, grid, grid).contiguous(memory_format=torch.channels_last_3d)
        folded = kind.fold(conv, bn, tuple(x.shape))
        with torch.no_grad():
            truth = (bn.double()(conv.double()(x.double())) + other.double()).clamp(min=0)
        got = folded.add_relu_(x, other)
        assert got.data_ptr() == other.data_ptr()
        np.testing.assert_allclose(got.double().numpy(), truth.numpy(), rtol=0, atol=1e-5)


def test_stem_runs_in_small_batches_alike() -> None:
    """The stem runs :data:`STEM_BATCH` patches at a time (an odd one alone); the pooled
    result is bit-identical to the stem on the whole batch at once."""
    net = _narrow_net()
    enc = FusedEncoder(net, batch=5)
    x = _patches(5)
    whole = PackedConv.fold(net.conv1, net.bn1, tuple(x.shape))
    with torch.no_grad():
        truth = torch.max_pool3d(whole(x.contiguous(memory_format=torch.channels_last_3d), "relu"), *enc.pool)
    assert STEM_BATCH < 5
    np.testing.assert_array_equal(enc.stem_and_pool(x).numpy(), truth.numpy())


@pytest.mark.parametrize(("cin", "cout", "stride"), [(1024, 2048, 2), (2048, 512, 1), (512, 2048, 1), (96, 64, 1)])
def test_matmul_conv_is_the_convolution_and_batch_independent(cin: int, cout: int, stride: int) -> None:
    """A 1x1x1 convolution as a product chunked along its inputs: equal to PyTorch's in
    float64, and a patch's output is bit-identical in batches of 2, 5 and 16 (the shapes of
    stage 4, where one unchunked product moved with the batch)."""
    conv, bn = _conv_bn(cin, cout, 1, stride, seed=cin)
    grid = 4 if stride == 2 else 2
    x = torch.rand(16, cin, grid, grid, grid).contiguous(memory_format=torch.channels_last_3d)
    mm = MatmulConv.fold(conv, bn, tuple(x.shape))
    with torch.no_grad():
        truth = bn.double()(conv.double()(x.double()))
        full = mm(x, "relu")
        added = mm.add_relu_(x, (-truth.float()).contiguous(memory_format=torch.channels_last_3d))
    np.testing.assert_allclose(full.double().numpy(), truth.clamp(min=0).numpy(), rtol=0, atol=2e-5)
    assert float(added.abs().max()) <= 2e-5  # conv(x) - conv(x), through the addition
    for n in (2, 5):
        np.testing.assert_array_equal(mm(x[-n:], "relu").numpy(), full[-n:].numpy())


def test_equals_the_network_in_float64() -> None:
    net = _narrow_net()
    x = _patches(3)
    with torch.no_grad():
        truth = net.double()(x.double()).numpy()
        net.float()
        eager = net(x).numpy()
    fused = FusedEncoder(net, batch=4)(x).numpy()
    scale = np.abs(truth).max()
    assert np.abs(fused - truth).max() <= 2e-6 * scale
    assert np.abs(eager - truth).max() <= 2e-6 * scale
    assert fused.shape == (3, 512)


@pytest.mark.parametrize("packed_for", [2, 5, 16])
def test_features_do_not_depend_on_the_batch(packed_for: int) -> None:
    """A patch gives bit-identical features in every batch of two or more, wherever it sits,
    whatever the batch the weights were packed for."""
    enc = FusedEncoder(_narrow_net(), batch=packed_for)
    x = _patches(6)
    full = enc(x)
    for lo, hi in ((0, 2), (1, 4), (2, 6), (0, 5)):
        np.testing.assert_array_equal(enc(x[lo:hi]).numpy(), full[lo:hi].numpy())
    np.testing.assert_array_equal(enc(torch.cat([x[5:], x[:1]])).numpy(), full[[5, 0]].numpy())
