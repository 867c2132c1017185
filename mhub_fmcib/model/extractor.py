"""The feature extractor: the FMCIB network loaded once, in inference mode, on its device.

``FeatureExtractor.extract``: float32 patches (B, 50, 50, 50) -> float32 features (B, 4096).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..records import N_FEATURES, PATCH_SIZE
from .device import resolve_device
from .network import FmcibResNet
from .weights import LoadedWeights

log = logging.getLogger(__name__)


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
