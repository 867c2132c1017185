"""Which torch device a run uses (``--device``)."""

from __future__ import annotations

import torch

from ..errors import WeightsError


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise WeightsError("--device cuda was requested but no CUDA device is available; use --device cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise WeightsError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)
