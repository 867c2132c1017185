"""Encoder features of cached lesions (the inference patch: each cube's central 50³)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .data.cache import PatchCache


@torch.inference_mode()
def extract_features(
    encoder: nn.Module, cache: PatchCache, rows: Sequence[int], device: torch.device, batch_size: int = 8
) -> npt.NDArray[np.float32]:
    """float32 (len(rows), n_features): ``encoder`` in eval mode on the central 50³ of each
    cached lesion cube (what ``mhub-fmcib run`` sees for the same seed)."""
    encoder = encoder.to(device).eval()
    out = []
    for s in range(0, len(rows), batch_size):
        x = np.stack([cache.centre_patch(np.asarray(cache.lesions[r])) for r in rows[s : s + batch_size]])
        out.append(encoder(torch.from_numpy(x)[:, None].to(device)).float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)
