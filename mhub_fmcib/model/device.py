"""Which torch device a run uses (``--device auto|cpu|cuda|cuda:N``).

A device that does not exist is a usage error (:class:`~mhub_fmcib.errors.ConfigError`,
exit code 2), found before any weights are read.
"""

from __future__ import annotations

import re

import torch

from ..errors import ConfigError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` are
    checked against this machine.

    Raises:
        ConfigError: an unknown name, or a CUDA device this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    m = _CUDA.fullmatch(device)
    if m is None:
        raise ConfigError(f"unknown device {device!r}; use --device auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was requested but this machine has no CUDA device; use --device cpu")
    index = int(m.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"--device {device} was requested but this machine has {count} CUDA device(s) "
            f"(cuda:0..cuda:{count - 1}); pick one of them or --device cpu"
        )
    return torch.device(device)
