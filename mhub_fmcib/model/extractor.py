"""The feature extractor: the FMCIB network loaded once, in inference mode, on its device.

``FeatureExtractor.extract``: float32 patches (B, 50, 50, 50) -> float32 features (B, 4096).

Set-up is cheap: the network is built with its initialisation skipped and the checked,
memory-mapped weights are assigned into it (no second copy; ``benchmarks/startup.py``).

Batch independence: a lesion's features do not depend on which other lesions share its
batch. On CPU (oneDNN, fused or eager) the result of one sample is bit-identical for every
batch of two or more, whatever the other samples are and wherever it sits in the batch
(measured, and tested on the machine the tests run on); a batch of one takes
another kernel path (up to ~8e-5 different at feature scale ~70, measured). A lone patch is
therefore padded with a zero patch to a batch of two (``MIN_COMPUTE_BATCH``), so a lesion
gets the same numbers whether its series has one lesion or sixty (tested).

CPU encoder (``--cpu-encoder``, float32 on a CPU): ``fused`` (default) runs the network as
folded, pre-packed oneDNN convolutions (:mod:`mhub_fmcib.model.fused`): 1.4-1.5x eager's
throughput for ~0.5 s of set-up, and the folded weights are the only copy kept (the mapped
file is released). ``eager`` runs the PyTorch network itself, with the mapped weights
assigned into it (the bit-exact MONAI-layout network; ``bf16`` on a CPU and every CUDA run
use it too). The two differ by float32 rounding only (at most ~1.6e-6 of the feature scale,
measured; tested).

Batch size: ``None`` (``--batch-size auto``, the default) is chosen by memory
(:func:`choose_batch_size`): on a CPU up to :data:`MAX_AUTO_CPU_BATCH` from the available
RAM (a larger batch costs fewer CPU seconds per patch, ~0.25 GB more peak RSS per 8
patches; ``benchmarks/README.md``); on CUDA from the device's free memory and the measured
activation memory of a probe batch. On CUDA the patches go through pinned host buffers with
non-blocking copies, so that the next chunk is copied while the device computes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..config import CpuEncoder, Precision, RunConfig
from ..records import N_FEATURES, PATCH_SIZE
from .device import check_precision, resolve_device
from .fused import FusedEncoder, fused_available
from .network import build_uninitialised
from .weights import LoadedWeights

log = logging.getLogger(__name__)

#: Smallest batch the network is run with (see the module docstring).
MIN_COMPUTE_BATCH = 2
#: Largest batch ``--batch-size auto`` picks on a CPU (per-patch CPU time measured 0.46 /
#: 0.39 / 0.34 CPU s at batch 8 / 16 / 32). 16, not 32: batch 32 (+0.5 GB) took a 500-lesion
#: series to 2.29 GiB, above the memory bound of 1.5 GB + weights (README, Large PACS exports).
MAX_AUTO_CPU_BATCH = 16
#: Peak RSS per patch of a CPU batch (bytes; measured ~22 MB: 1.50 GB at batch 8, 2.03 GB at
#: batch 32 for the whole run), rounded up.
CPU_BYTES_PER_PATCH = 32 * 2**20
#: Largest batch ``--batch-size auto`` picks on CUDA (past it a larger batch buys nothing
#: but latency and memory for the next case's patches).
MAX_AUTO_BATCH = 128
#: Activation memory per patch assumed when the CUDA probe cannot measure it (bytes; the
#: widest activation is 128 x 25^3 float32 = 8 MB, a few are alive at once, plus cuDNN
#: workspace): deliberately high.
ESTIMATED_BYTES_PER_PATCH = 64 * 2**20
_AMP_DTYPES = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def choose_batch_size(
    free_bytes: int,
    per_patch_bytes: float,
    *,
    reserve_fraction: float = 0.2,
    reserve_bytes: int = 512 * 2**20,
    max_batch: int = MAX_AUTO_BATCH,
) -> int:
    """The largest batch whose activations fit into a device's free memory.

    Args:
        free_bytes: free device memory after the weights are on it (``torch.cuda.mem_get_info``).
        per_patch_bytes: activation memory one patch of a batch needs (bytes; measured on a
            probe batch, else :data:`ESTIMATED_BYTES_PER_PATCH`).
        reserve_fraction, reserve_bytes: kept free (fragmentation, other processes, the
            features on their way back): the larger of the two.
        max_batch: upper bound.

    Returns:
        A multiple of 8 when at least 8 fit (kernels favour it), else the largest count that
        fits, never below :data:`MIN_COMPUTE_BATCH`.

    Raises:
        ValueError: ``per_patch_bytes`` is not positive.
    """
    if per_patch_bytes <= 0:
        raise ValueError(f"per-patch memory must be positive, got {per_patch_bytes}")
    usable = free_bytes - max(reserve_bytes, int(free_bytes * reserve_fraction))
    n = min(int(usable // per_patch_bytes), max_batch)
    if n >= 8:
        n -= n % 8
    return max(n, MIN_COMPUTE_BATCH)


def available_host_memory() -> int:
    """Bytes of RAM this process may still use: the system's available memory, bounded by a
    cgroup v2 limit (containers, Slurm) where one is set."""
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return avail
    return avail if limit == "max" else min(avail, max(int(limit) - used, 0))


def _cuda_bytes_per_patch(
    model: nn.Module, device: torch.device, autocast: AbstractContextManager[object], channels_last: bool
) -> float:
    """Peak activation memory per patch of a probe batch of 2 on ``device`` (bytes), or
    :data:`ESTIMATED_BYTES_PER_PATCH` when the probe fails (out of memory)."""
    n = MIN_COMPUTE_BATCH
    x = torch.zeros(n, 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        with torch.inference_mode(), autocast:
            model(x)
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        log.warning("CUDA probe batch ran out of memory; assuming %d MiB per patch", ESTIMATED_BYTES_PER_PATCH >> 20)
        return float(ESTIMATED_BYTES_PER_PATCH)
    per = (torch.cuda.max_memory_allocated(device) - base) / n
    return max(per, 1.0)


def nonfinite_reason(features: npt.NDArray[np.float32]) -> str | None:
    """Why one feature vector (4096,) is unusable, or ``None`` if every value is finite."""
    if bool(np.isfinite(features).all()):
        return None
    n_nan, n_inf = int(np.isnan(features).sum()), int(np.isinf(features).sum())
    return (
        f"the encoder gave non-finite features ({n_nan} NaN, {n_inf} inf of {features.size}) although the "
        "weights and the patch were finite; with --precision fp16 this is an overflow (use bf16 or fp32)"
    )


class FeatureExtractor:
    """The encoder, loaded once, in eval/inference mode.

    Args:
        weights: checked weights (:func:`mhub_fmcib.model.weights.read_weights`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: patches per forward pass; ``None``: chosen (by available RAM on CPU, by
            free memory on CUDA: :func:`choose_batch_size`).
        cpu_encoder: on a CPU in float32, ``fused`` (default) or ``eager`` (see the module
            docstring); ignored elsewhere.
        precision: ``fp32`` (default), or autocast to ``bf16`` / ``fp16`` (CUDA only) for
            the convolutions; features stay float32 on output but differ from fp32 (see
            ``benchmarks/README.md``).
        channels_last: run the eager network in the channels-last-3d memory format (the
            fused encoder always does).

    Attributes:
        weights: the weights' identity (path, sha256, demonstration mark). On the fused path
            its ``state_dict`` is empty: the packed copy is the only one kept.
        model: the eager network, or ``None`` on the fused path.
        encoder: ``"fused"`` or ``"eager"``: the path the features come from.
        setup_s: seconds spent packing the fused encoder (0 for eager).

    ``extract(patches)``: float32 (B, 50, 50, 50) or (B, 1, 50, 50, 50) -> float32 (B, 4096).
    """

    def __init__(
        self,
        weights: LoadedWeights,
        device: str = "auto",
        batch_size: int | None = 4,
        cpu_encoder: CpuEncoder = CpuEncoder.FUSED,
        precision: Precision = Precision.FP32,
        channels_last: bool = False,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.precision = Precision(precision)
        check_precision(self.precision, self.device)
        model = build_uninitialised()
        # the checked tensors become the network's parameters (no copy on CPU)
        model.load_state_dict(dict(weights.state_dict), strict=True, assign=True)
        model = model.to(self.device).eval()
        fused = self._use_fused(CpuEncoder(cpu_encoder))
        self.channels_last = channels_last and not fused  # the fused encoder is channels-last anyway
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        self._pin = self.device.type == "cuda"
        if self._pin and self.precision is Precision.FP32:
            # cuDNN's default TF32 convolutions would cut float32 to a 10-bit mantissa
            # (features ~1e-3 off): fp32 means float32 (a process-wide torch setting)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.bytes_per_patch: float | None = None  # measured on CUDA for batch_size=None
        self.model: nn.Module | None = model
        self.batch_size = self._batch_size(batch_size, model)
        self.setup_s = 0.0
        self._forward: Callable[[torch.Tensor], torch.Tensor] = model
        self.weights = weights
        if fused:
            t0 = time.perf_counter()
            batch = max(self.batch_size, MIN_COMPUTE_BATCH)
            self._forward = FusedEncoder(model, batch, PATCH_SIZE, release=weights.mapped.release)
            self.setup_s = time.perf_counter() - t0
            # keep only the packed copy: the network and the mapped file are released
            self.model = None
            self.weights = replace(weights, state_dict={})
            log.info("fused CPU encoder packed for batch %d in %.2f s", self.batch_size, self.setup_s)
        self._buffers: list[torch.Tensor] = []  # pinned host buffers (CUDA), made on first use
        self._copied: list[torch.cuda.Event | None] = [None, None]

    @property
    def encoder(self) -> str:
        """``"fused"`` or ``"eager"``: the path the features come from."""
        return "eager" if self.model is not None else "fused"

    def _use_fused(self, cpu_encoder: CpuEncoder) -> bool:
        """Whether the fused encoder runs: asked for, on a CPU, in float32, and available."""
        if cpu_encoder is not CpuEncoder.FUSED or self.device.type != "cpu" or self.precision is not Precision.FP32:
            return False
        if not fused_available():
            log.warning("this torch build has no oneDNN fused convolutions; using the eager encoder")
            return False
        return True

    def _batch_size(self, requested: int | None, model: nn.Module) -> int:
        """``requested``, or the chosen batch size (see the class docstring)."""
        if requested is not None:
            return requested
        if self.device.type != "cuda":
            return choose_batch_size(available_host_memory(), CPU_BYTES_PER_PATCH, max_batch=MAX_AUTO_CPU_BATCH)
        self.bytes_per_patch = _cuda_bytes_per_patch(model, self.device, self._autocast(), self.channels_last)
        free, total = torch.cuda.mem_get_info(self.device)
        n = choose_batch_size(free, self.bytes_per_patch)
        log.info(
            "batch size %d: %.0f MiB per patch measured, %.1f of %.1f GiB free on %s",
            n, self.bytes_per_patch / 2**20, free / 2**30, total / 2**30, self.device,
        )  # fmt: skip
        return n

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision is Precision.FP32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AMP_DTYPES[self.precision])

    def _to_device(self, chunk: npt.NDArray[np.float32], k: int) -> torch.Tensor:
        """``chunk`` (m, 1, 50, 50, 50) on the device. On CUDA through one of two pinned host
        buffers (alternating with ``k``) and a non-blocking copy: the host fills the next
        chunk's buffer while the device computes; a buffer is refilled only once its last
        copy has finished."""
        if not self._pin:
            t = torch.from_numpy(chunk).to(self.device)
        else:
            if not self._buffers:
                shape = (self.batch_size, 1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE)
                self._buffers = [torch.empty(shape, dtype=torch.float32).pin_memory() for _ in range(2)]
            slot = k % 2
            done = self._copied[slot]
            if done is not None:
                done.synchronize()
            buf = self._buffers[slot][: chunk.shape[0]]
            buf.numpy()[...] = chunk
            t = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._copied[slot] = event
        return t.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else t

    def compute_batch(self, n: int) -> int:
        """How many patches the network is run with for a chunk of ``n``."""
        return max(n, MIN_COMPUTE_BATCH)

    @torch.inference_mode()
    def extract(self, patches: npt.NDArray[np.float32] | Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """Features (B, 4096) of ``patches``, in chunks of ``batch_size`` (see the class
        docstring): an array (B, 50, 50, 50) or (B, 1, 50, 50, 50), or a sequence of B
        (50, 50, 50) patches, stacked one chunk at a time (a run's patches are never copied
        into one array: 500 patches are 250 MB). Non-finite features are returned as they
        are; the caller fails those lesions (:func:`nonfinite_reason`)."""
        n_patches = patches.shape[0] if isinstance(patches, np.ndarray) else len(patches)
        outs: list[torch.Tensor] = []  # on the device until the end (no sync per chunk on CUDA)
        for k, s in enumerate(range(0, n_patches, self.batch_size)):
            chunk = _patch_chunk(patches[s : s + self.batch_size])
            n = chunk.shape[0]
            m = self.compute_batch(n)
            if m > n:
                chunk = np.concatenate([chunk, np.zeros((m - n, *chunk.shape[1:]), np.float32)])
            t = self._to_device(np.ascontiguousarray(chunk), k)
            with self._autocast():
                y = self._forward(t)
            outs.append(y.float()[:n])
        if not outs:
            return np.empty((0, N_FEATURES), dtype=np.float32)
        return torch.cat(outs).cpu().numpy()


def _patch_chunk(patches: npt.NDArray[np.float32] | Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """``patches`` as one float32 array (m, 1, 50, 50, 50); raises ValueError for any other shape."""
    if not isinstance(patches, np.ndarray):
        shapes = {np.shape(p) for p in patches}
        if shapes != {(PATCH_SIZE,) * 3}:
            raise ValueError(f"patches must be (50, 50, 50) each, got shapes {sorted(shapes)}")
        patches = np.stack(patches)
    x = np.asarray(patches, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[1:] != (1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"patches must be (B, 1, 50, 50, 50), got {x.shape}")
    return x


def extractor_for(config: RunConfig, weights: LoadedWeights) -> FeatureExtractor:
    """The run's extractor: device, batch size, CPU encoder, precision and memory format
    from ``config``."""
    return FeatureExtractor(
        weights,
        device=config.device,
        batch_size=config.batch_size,
        cpu_encoder=config.cpu_encoder,
        precision=config.precision,
        channels_last=config.channels_last,
    )
