"""The FMCIB encoder: MONAI-layout 3D ResNet50, widen 2, stride-2 first convolution.

The network is written here in plain PyTorch with MONAI's module names, so its
``state_dict`` keys are exactly those of ``monai.networks.nets.resnet50(...)`` and of the
published ``trunk_state_dict``; the inference package does not need MONAI. A test builds
MONAI's own network with the reference arguments and checks identical keys, shapes and
outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

#: Number of parameters and state-dict tensors of the published encoder.
N_PARAMETERS = 184_477_824
N_STATE_TENSORS = 322


_SKIP_INIT: ContextVar[bool] = ContextVar("fmcib_skip_init", default=False)


@contextmanager
def uninitialised() -> Iterator[None]:
    """Inside this context the network is built without initialising its convolutions
    (neither PyTorch's default Kaiming-uniform nor FMCIB's Kaiming-normal): their weights are
    left as allocated, to be replaced by ``load_state_dict(..., assign=True)``. Building the
    FMCIB encoder this way takes ~0.05 s instead of ~4 s (``benchmarks/startup.py``); a
    network built here must not be used before its weights are loaded."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose initialisation is skipped inside :func:`uninitialised` (the same
    module in every other respect: same state-dict keys, same forward)."""

    def reset_parameters(self) -> None:
        if not _SKIP_INIT.get():
            super().reset_parameters()


class Bottleneck(nn.Module):
    """MONAI's ``ResNetBottleneck`` (expansion 4), 3D."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = out + residual
        return self.relu(out)


def bottleneck_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet stage: ``blocks`` bottlenecks of width ``planes`` (output channels
    ``planes * 4``), the first with stride ``stride`` and a 1x1x1 projection shortcut
    (MONAI's shortcut type B, with bias) when the shape changes."""
    downsample: nn.Module | None = None
    if stride != 1 or in_planes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            Conv3d(in_planes, planes * Bottleneck.expansion, 1, stride=stride, bias=True),
            nn.BatchNorm3d(planes * Bottleneck.expansion),
        )
    layers = [Bottleneck(in_planes, planes, stride, downsample)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class FmcibResNet(nn.Module):
    """3D ResNet50 as ``monai.networks.nets.resnet50(spatial_dims=3, n_input_channels=1,
    widen_factor=2, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B",
    bias_downsample=True, feed_forward=False)`` — the one definition of the network; training
    builds smaller widths and depths (same module names) through ``widen_factor`` and ``layers``.

    Input: float32 (B, 1, D, H, W) (the reference feeds (B, 1, 50, 50, 50) in (z, y, x)).
    Output: float32 (B, 512 * widen_factor * 4), 4096 for FMCIB: the global average pool of
    the last block.
    """

    def __init__(
        self, conv1_t_stride: int = 2, widen_factor: float = 2, layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    ) -> None:
        super().__init__()
        planes = [int(p * widen_factor) for p in (64, 128, 256, 512)]
        self.conv1 = Conv3d(1, planes[0], kernel_size=7, stride=conv1_t_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(planes[0])
        self.act = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        ins = [planes[0], *(p * Bottleneck.expansion for p in planes[:3])]
        self.layer1 = bottleneck_stage(ins[0], planes[0], layers[0], stride=1)
        self.layer2 = bottleneck_stage(ins[1], planes[1], layers[1], stride=2)
        self.layer3 = bottleneck_stage(ins[2], planes[2], layers[2], stride=2)
        self.layer4 = bottleneck_stage(ins[3], planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        if _SKIP_INIT.get():
            return
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def build_uninitialised(conv1_t_stride: int = 2) -> FmcibResNet:
    """The FMCIB encoder with its convolutions left uninitialised, in eval mode: the
    skeleton that a checked state dict is assigned into (see :func:`uninitialised`)."""
    with uninitialised():
        return FmcibResNet(conv1_t_stride=conv1_t_stride).eval()
