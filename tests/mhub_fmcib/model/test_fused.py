"""The fused CPU encoder on its own (``mhub_fmcib.model.fused``): a narrow network with
randomised batch-norm statistics, so that every folding path runs in seconds. The
full-size network is checked in ``test_network.py`` (against float64, eager and MONAI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mhub_fmcib.model.fused import FusedEncoder, GemmConv, PackedConv, fused_available
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
    """The narrow network uses all three kinds: packed, plain and matrix-product convolutions."""
    enc = FusedEncoder(_narrow_net(), batch=4)
    convs = [c for b in enc.blocks for c in (b.c1, b.c2, b.c3, b.shortcut) if c is not None]
    assert any(isinstance(c, GemmConv) for c in convs)
    assert any(isinstance(c, PackedConv) and c.weight.layout == torch._mkldnn for c in convs)  # type: ignore[attr-defined]
    assert any(isinstance(c, PackedConv) and c.weight.layout == torch.strided for c in convs)


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
