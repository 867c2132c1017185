"""The encoder: the FMCIB ResNet50 or a smaller variant with the same key names.

The full-size configuration builds :class:`mhub_fmcib.model.network.FmcibResNet` itself, so the
exported trunk is exactly what ``mhub_fmcib.model.weights.read_weights`` checks. Smaller widths
and depths (CPU smoke tests, benchmarks) use :class:`ResNetEncoder`, the same network class
with other widths and depths (the one definition lives in :mod:`mhub_fmcib.model.network`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mhub_fmcib.errors import ConfigError
from mhub_fmcib.export.atomic import atomic_write
from mhub_fmcib.model.network import Bottleneck, FmcibResNet
from mhub_fmcib.model.weights import check_state_dict, load_state_dict_file


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the 3D ResNet.

    Attributes:
        widen_factor: channel multiplier (FMCIB: 2 → 4096 features; 0.125 → 256).
        layers: bottleneck blocks per stage (FMCIB / ResNet50: (3, 4, 6, 3)).
        conv1_t_stride: stride of the first convolution (FMCIB: 2).
    """

    widen_factor: float = 2.0
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    conv1_t_stride: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ConfigError(f"encoder.layers must be 4 positive block counts, got {self.layers}")
        if self.widen_factor <= 0 or int(64 * self.widen_factor) < 1:
            raise ConfigError(f"encoder.widen_factor must be > 0 (64 * w >= 1), got {self.widen_factor}")
        if self.conv1_t_stride not in (1, 2):
            raise ConfigError(f"encoder.conv1_t_stride must be 1 or 2, got {self.conv1_t_stride}")

    @property
    def is_fmcib(self) -> bool:
        """Whether this is the published FMCIB architecture."""
        return self.widen_factor == 2.0 and self.layers == (3, 4, 6, 3) and self.conv1_t_stride == 2

    @property
    def n_features(self) -> int:
        """Length of the pooled feature vector (4096 for FMCIB)."""
        return int(512 * self.widen_factor) * Bottleneck.expansion


class ResNetEncoder(FmcibResNet):
    """:class:`mhub_fmcib.model.network.FmcibResNet` of any width and depth (MONAI's module
    names), built from an :class:`EncoderConfig`.

    Input float32 (B, 1, D, H, W); output (B, ``config.n_features``).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(conv1_t_stride=config.conv1_t_stride, widen_factor=config.widen_factor, layers=config.layers)


def build_encoder(config: EncoderConfig) -> nn.Module:
    """FmcibResNet for the FMCIB configuration, else a :class:`ResNetEncoder`."""
    if config.is_fmcib:
        return FmcibResNet()
    return ResNetEncoder(config)


def export_trunk(encoder: nn.Module, config: EncoderConfig, path: Path) -> Path:
    """Write ``{"trunk_state_dict": ..., "encoder": {...}}`` atomically (CPU tensors).

    For the FMCIB configuration the file is what ``mhub-fmcib run --weights`` loads
    strictly; the extra ``encoder`` entry (plain numbers) lets training rebuild small variants.
    """
    sd = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    enc = asdict(config)
    enc["layers"] = list(config.layers)
    return atomic_write(path, lambda fh: torch.save({"trunk_state_dict": sd, "encoder": enc}, fh))


def encoder_config_of(path: Path) -> EncoderConfig:
    """The ``encoder`` entry of an exported trunk, or the FMCIB configuration if absent."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    enc = obj.get("encoder") if isinstance(obj, dict) else None
    if not isinstance(enc, dict):
        return EncoderConfig()
    return EncoderConfig(
        widen_factor=float(enc["widen_factor"]),
        layers=tuple(enc["layers"]),
        conv1_t_stride=int(enc["conv1_t_stride"]),
    )


def load_trunk(path: Path, config: EncoderConfig | None = None) -> tuple[nn.Module, EncoderConfig]:
    """Build the encoder described by ``path`` (or ``config``) and load its weights strictly."""
    config = config or encoder_config_of(path)
    model = build_encoder(config)
    sd = load_state_dict_file(path)
    check_state_dict(model, sd, path)
    model.load_state_dict(sd, strict=True)
    return model, config
