"""The FMCIB encoder: MONAI-layout 3D ResNet50, widen 2, stride-2 first convolution.

The network is written here in plain PyTorch with MONAI's module names, so its
``state_dict`` keys are exactly those of ``monai.networks.nets.resnet50(...)`` and of the
published ``trunk_state_dict``; the inference package does not need MONAI. A test builds
MONAI's own network with the reference arguments and checks identical keys, shapes and
outputs.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .errors import WeightsError
from .types import N_FEATURES, PATCH_SIZE

log = logging.getLogger(__name__)

#: Number of parameters and state-dict tensors of the published encoder.
N_PARAMETERS = 184_477_824
N_STATE_TENSORS = 322
#: Prefixes under which Lightning checkpoints store the trunk.
TRUNK_PREFIXES = ("model.trunk.", "trunk.", "model.backbone.", "backbone.", "model.", "module.")


class Bottleneck(nn.Module):
    """MONAI's ``ResNetBottleneck`` (expansion 4), 3D."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
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


class FmcibResNet(nn.Module):
    """3D ResNet50 as ``monai.networks.nets.resnet50(spatial_dims=3, n_input_channels=1,
    widen_factor=2, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B",
    bias_downsample=True, feed_forward=False)``.

    Input: float32 (B, 1, D, H, W) (the reference feeds (B, 1, 50, 50, 50) in (z, y, x)).
    Output: float32 (B, 4096), the global average pool of the last block.
    """

    def __init__(self, conv1_t_stride: int = 2, widen_factor: int = 2) -> None:
        super().__init__()
        block_inplanes = [int(p * widen_factor) for p in (64, 128, 256, 512)]
        self.in_planes = block_inplanes[0]
        self.conv1 = nn.Conv3d(1, self.in_planes, kernel_size=7, stride=conv1_t_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(self.in_planes)
        self.act = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block_inplanes[0], 3, stride=1)
        self.layer2 = self._make_layer(block_inplanes[1], 4, stride=2)
        self.layer3 = self._make_layer(block_inplanes[2], 6, stride=2)
        self.layer4 = self._make_layer(block_inplanes[3], 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample: nn.Module | None = None
        if stride != 1 or self.in_planes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv3d(self.in_planes, planes * Bottleneck.expansion, 1, stride=stride, bias=True),
                nn.BatchNorm3d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _optimized_for_cpu(model: nn.Module, batch_size: int) -> nn.Module:
    """The model traced and frozen for CPU inference (batch norm folded into the
    convolutions, weights pre-packed for oneDNN): about 10-15 % more throughput than eager
    mode at batch 8 on a 2-core AVX-512 machine, for ~1.6 GB more memory and a few seconds
    of set-up. Results differ from eager mode by float32 rounding only (tested). Falls back
    to the eager model if tracing fails."""
    example = torch.zeros(batch_size, 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.optimize_for_inference(torch.jit.trace(model, example, check_trace=False))
            for _ in range(2):  # the JIT specialises the graph during its first calls
                traced(example)
        return traced
    except RuntimeError as e:
        log.warning("CPU graph optimisation failed (%s); using the eager model", e)
        return model


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _extract_trunk(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{path}: expected a dict saved with torch.save, got {type(obj).__name__}. "
            "Pass the published model_weights.torch or a checkpoint with 'trunk_state_dict'."
        )
    if "trunk_state_dict" in obj:
        sd = obj["trunk_state_dict"]
    elif "state_dict" in obj:
        full = obj["state_dict"]
        if not isinstance(full, Mapping):
            raise WeightsError(f"{path}: 'state_dict' is not a mapping of tensors")
        sd = {}
        for prefix in TRUNK_PREFIXES:
            sd = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
            if "conv1.weight" in sd:
                break
        else:
            if "conv1.weight" in full:
                sd = dict(full)
        if not sd:
            raise WeightsError(
                f"{path}: 'state_dict' holds no encoder tensors under any of the prefixes "
                f"{', '.join(TRUNK_PREFIXES)} (first keys: {list(full)[:5]})"
            )
    elif "conv1.weight" in obj:
        sd = obj
    else:
        raise WeightsError(
            f"{path}: no 'trunk_state_dict' or 'state_dict' entry (keys: {list(obj)[:10]}). "
            "This does not look like FMCIB weights."
        )
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: the encoder state dict must map names to tensors")
    return {str(k): v for k, v in sd.items()}


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`WeightsError` naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{len(items)} {name}: {shown}")
        raise WeightsError(
            f"{path} does not match the FMCIB encoder ({'; '.join(parts)}). "
            "Pass the published model_weights.torch (Zenodo record 10528450) or a trunk "
            "exported by mhub-fmcib-train."
        )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read the encoder tensors from a weights file with ``torch.load(weights_only=True)``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise WeightsError(f"weights file {path} does not exist") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(
            f"{path} cannot be read as a torch weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Is it truncated or a different format?"
        ) from e
    except Exception as e:
        raise WeightsError(
            f"{path} holds objects that cannot be loaded safely with weights_only=True "
            f"({type(e).__name__}). Only plain tensor dicts are accepted."
        ) from e
    return _extract_trunk(obj, path)


@dataclass(frozen=True)
class LoadedWeights:
    """Encoder weights read from a file, with the file's sha256."""

    path: Path
    sha256: str
    state_dict: Mapping[str, torch.Tensor]


def read_weights(path: Path) -> LoadedWeights:
    """Read and check a weights file against the FMCIB encoder (strictly)."""
    path = Path(path)
    sd = load_state_dict_file(path)
    check_state_dict(FmcibResNet(), sd, path)
    return LoadedWeights(path=path, sha256=sha256_file(path), state_dict=sd)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise WeightsError("--device cuda was requested but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise WeightsError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


class FeatureExtractor:
    """The encoder, loaded once, in eval/inference mode.

    ``extract(patches)``: float32 (B, 50, 50, 50) or (B, 1, 50, 50, 50) -> float32 (B, 4096).
    """

    def __init__(
        self, weights: LoadedWeights, device: str = "auto", batch_size: int = 4, optimize: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.weights = weights
        self.device = resolve_device(device)
        self.batch_size = batch_size
        model = FmcibResNet()
        model.load_state_dict(dict(weights.state_dict), strict=True)
        self.model: nn.Module = model.to(self.device).eval()
        self.fixed_batch = False
        if optimize and self.device.type == "cpu":
            self.model = _optimized_for_cpu(self.model, batch_size)
            # the traced graph is specialised per input shape (a copy of the packed weights
            # each): pad every batch to batch_size so that one graph serves all
            self.fixed_batch = isinstance(self.model, torch.jit.ScriptModule)

    @torch.inference_mode()
    def extract(self, patches: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = np.asarray(patches, dtype=np.float32)
        if x.ndim == 4:
            x = x[:, None]
        if x.ndim != 5 or x.shape[1:] != (1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"patches must be (B, 1, 50, 50, 50), got {x.shape}")
        out = np.empty((x.shape[0], N_FEATURES), dtype=np.float32)
        for s in range(0, x.shape[0], self.batch_size):
            chunk = x[s : s + self.batch_size]
            n = chunk.shape[0]
            if self.fixed_batch and n < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), np.float32)])
            t = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
            out[s : s + n] = self.model(t).float().cpu().numpy()[:n]
        return out


def write_random_weights(path: Path, seed: int = 0, layout: str = "trunk") -> Path:
    """Write a random-initialised encoder in the published file format (for tests and demos).

    ``layout``: ``"trunk"`` writes ``{"trunk_state_dict": ...}`` like ``model_weights.torch``;
    ``"lightning"`` writes ``{"state_dict": {"model.trunk.<name>": ...}}``.
    BatchNorm running statistics are randomised too so that they matter.
    """
    torch.manual_seed(seed)
    model = FmcibResNet()
    sd = model.state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in sd.items():
        if k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith(".bias") and "bn" in k:
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    if layout == "trunk":
        obj: dict[str, object] = {"trunk_state_dict": sd}
    elif layout == "lightning":
        obj = {"state_dict": {f"model.trunk.{k}": t for k, t in sd.items()}}
    else:
        raise ValueError(f"unknown layout {layout!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path
