"""Which torch device a run uses (``--device auto|cpu|cuda|cuda:N``).

A device that does not exist is a usage error (:class:`~mhub_fmcib.errors.ConfigError`,
exit code 2), found before any weights are read.
"""

from __future__ import annotations

import logging
import re

import torch

from ..config import Precision
from ..errors import ConfigError

log = logging.getLogger(__name__)

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


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN on this CPU computes bfloat16 natively (AVX-512 BF16 or AMX). Without
    it torch's CPU autocast to bfloat16 runs emulated: ~180x slower than float32 for the
    encoder's 3D convolutions on an AVX2-only AMD EPYC (``benchmarks/README.md``)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: Precision, device: torch.device) -> None:
    """Refuse a precision the device cannot run; warn where it would be slow.

    Raises:
        ConfigError: ``fp16`` on a CPU (torch's CPU float16 convolutions are emulated and
            the reference was never run that way); use ``bf16`` or ``fp32``.
    """
    if precision is Precision.FP16 and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; on CPU use --precision fp32 (default) or bf16")
    if precision is Precision.BF16 and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "--precision bf16 on a CPU without AVX-512 BF16/AMX: bfloat16 is emulated and the encoder "
            "runs far slower than with fp32 (measured ~180x for a 3D convolution); use --precision fp32"
        )
