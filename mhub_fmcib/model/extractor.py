"""The feature extractor: the FMCIB network loaded once, in inference mode, on its device.

``FeatureExtractor.extract``: float32 patches (B, 50, 50, 50) -> float32 features (B, 4096).

Set-up is cheap: the network is built with its initialisation skipped and the checked,
memory-mapped weights are assigned into it (no second copy; ``benchmarks/startup.py``).

Batch independence: a lesion's features do not depend on which other lesions share its
batch. On CPU (oneDNN) the result of one sample is bit-identical for every batch of two or
more, whatever the other samples are and wherever it sits in the batch; a batch of one takes
another kernel path (up to ~8e-5 different at feature scale ~70, measured). A lone patch is
therefore padded with a zero patch to a batch of two (``MIN_COMPUTE_BATCH``), so a lesion
gets the same numbers whether its series has one lesion or sixty (tested).

Batch size: ``None`` (``--batch-size auto``, the default) is chosen by memory
(:func:`choose_batch_size`): on a CPU up to :data:`MAX_AUTO_CPU_BATCH` from the available
RAM (eager oneDNN re-lays the 738 MB of weights out once per forward pass, so a larger batch
costs fewer CPU seconds per patch: batch 16 ~1.2x fewer than batch 8, identical features,
~0.25 GB more peak RSS; ``benchmarks/README.md``), :data:`DEFAULT_CPU_BATCH` with
``--optimize-cpu`` (its graph pads every batch to the batch size); on CUDA from the device's
free memory and the measured activation memory of a probe batch. On CUDA the patches go through pinned host
buffers with non-blocking copies, so that the next chunk is copied while the device computes.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..config import Precision, RunConfig
from ..records import N_FEATURES, PATCH_SIZE
from .device import check_precision, resolve_device
from .network import build_uninitialised
from .weights import LoadedWeights

log = logging.getLogger(__name__)

#: Smallest batch the network is run with (see the module docstring).
MIN_COMPUTE_BATCH = 2
#: ``--batch-size auto`` on a CPU with ``--optimize-cpu`` (its traced graph pads every batch
#: to this size), and the CLI's default before ``auto``.
DEFAULT_CPU_BATCH = 8
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


def _optimized_for_cpu(model: nn.Module, batch_size: int) -> nn.Module:
    """The model traced and frozen for CPU inference (batch norm folded into the
    convolutions, weights pre-packed for oneDNN): 1.2-1.5x the throughput of eager mode at
    batch 8 (``benchmarks/encoder.py``), for ~1.6 GB more memory and a set-up of several
    seconds. Results differ from eager mode by float32 rounding only (tested). Falls back to
    the eager model if tracing fails."""
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
        batch_size: patches per forward pass; ``None``: chosen (:data:`DEFAULT_CPU_BATCH`
            on CPU, by free memory on CUDA: :func:`choose_batch_size`).
        optimize: on CPU, trace and freeze the network (``--optimize-cpu``); batches are then
            padded to ``batch_size`` (one traced graph serves all).
        precision: ``fp32`` (default), or autocast to ``bf16`` / ``fp16`` (CUDA only) for
            the convolutions; features stay float32 on output but differ from fp32 (see
            ``benchmarks/README.md``).
        channels_last: run in the channels-last-3d memory format (CUDA; see benchmarks).

    ``extract(patches)``: float32 (B, 50, 50, 50) or (B, 1, 50, 50, 50) -> float32 (B, 4096).
    """

    def __init__(
        self,
        weights: LoadedWeights,
        device: str = "auto",
        batch_size: int | None = 4,
        optimize: bool = False,
        precision: Precision = Precision.FP32,
        channels_last: bool = False,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.weights = weights
        self.device = resolve_device(device)
        self.precision = Precision(precision)
        check_precision(self.precision, self.device)
        model = build_uninitialised()
        # the checked tensors become the network's parameters (no copy on CPU)
        model.load_state_dict(dict(weights.state_dict), strict=True, assign=True)
        model = model.to(self.device).eval()
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        self.model: nn.Module = model
        self._pin = self.device.type == "cuda"
        if self._pin and self.precision is Precision.FP32:
            # cuDNN's default TF32 convolutions would cut float32 to a 10-bit mantissa
            # (features ~1e-3 off): fp32 means float32 (a process-wide torch setting)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.bytes_per_patch: float | None = None  # measured on CUDA for batch_size=None
        self._traced_on_cpu = optimize and self.device.type == "cpu" and self.precision is Precision.FP32
        self.batch_size = self._batch_size(batch_size)
        self.fixed_batch = False
        if self._traced_on_cpu:
            self.model = _optimized_for_cpu(self.model, self.batch_size)
            # the traced graph is specialised per input shape (a copy of the packed weights
            # each): pad every batch to batch_size so that one graph serves all
            self.fixed_batch = isinstance(self.model, torch.jit.ScriptModule)
        self._buffers: list[torch.Tensor] = []  # pinned host buffers (CUDA), made on first use
        self._copied: list[torch.cuda.Event | None] = [None, None]

    def _batch_size(self, requested: int | None) -> int:
        """``requested``, or the chosen batch size (see the class docstring)."""
        if requested is not None:
            return requested
        if self.device.type != "cuda":
            if self._traced_on_cpu:
                return DEFAULT_CPU_BATCH
            return choose_batch_size(available_host_memory(), CPU_BYTES_PER_PATCH, max_batch=MAX_AUTO_CPU_BATCH)
        self.bytes_per_patch = _cuda_bytes_per_patch(self.model, self.device, self._autocast(), self.channels_last)
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
        return self.batch_size if self.fixed_batch else max(n, MIN_COMPUTE_BATCH)

    @torch.inference_mode()
    def extract(self, patches: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Features of ``patches``, in chunks of ``batch_size`` (see the class docstring).
        Non-finite features are returned as they are; the caller fails those lesions
        (:func:`nonfinite_reason`)."""
        x = np.asarray(patches, dtype=np.float32)
        if x.ndim == 4:
            x = x[:, None]
        if x.ndim != 5 or x.shape[1:] != (1, PATCH_SIZE, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"patches must be (B, 1, 50, 50, 50), got {x.shape}")
        outs: list[torch.Tensor] = []  # on the device until the end (no sync per chunk on CUDA)
        for k, s in enumerate(range(0, x.shape[0], self.batch_size)):
            chunk = x[s : s + self.batch_size]
            n = chunk.shape[0]
            m = self.compute_batch(n)
            if m > n:
                chunk = np.concatenate([chunk, np.zeros((m - n, *chunk.shape[1:]), np.float32)])
            t = self._to_device(np.ascontiguousarray(chunk), k)
            with self._autocast():
                y = self.model(t)
            outs.append(y.float()[:n])
        if not outs:
            return np.empty((0, N_FEATURES), dtype=np.float32)
        return torch.cat(outs).cpu().numpy()


def extractor_for(config: RunConfig, weights: LoadedWeights) -> FeatureExtractor:
    """The run's extractor: device, batch size, CPU optimisation, precision and memory
    format from ``config``."""
    return FeatureExtractor(
        weights,
        device=config.device,
        batch_size=config.batch_size,
        optimize=config.optimize_cpu,
        precision=config.precision,
        channels_last=config.channels_last,
    )
