"""Fine-tuning augmentations: smoothing, translations (±t voxels), axis flips, 90° rotations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from mhub_fmcib.records import PATCH_SIZE

Array = npt.NDArray[np.float32]


def centre_crop(cube: Array, size: int = PATCH_SIZE, shift: tuple[int, int, int] = (0, 0, 0)) -> Array:
    """``size``³ from the centre of ``cube`` moved by ``shift`` voxels; outside the cube is 0
    (normalised units, i.e. −1024 HU, like the inference patch's padding)."""
    r = np.asarray(cube.shape)
    start = (r - size) // 2 + np.asarray(shift)
    out = np.zeros((size,) * 3, np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, r)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = cube[
        src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
    ]
    return out


@dataclass(frozen=True)
class FinetuneAugment:
    """Fine-tuning augmentation of a cached cube → (50, 50, 50) float32.

    Defaults are the authors' (``fmcib_finetune.yaml``), each transform applied with its
    own probability, in their order: Gaussian smoothing (``smooth_p``, sigma U(0.25, 1.5)
    voxels per axis), translation (``translate_p``, integer uniform in ±``translate`` per
    axis; our cube supplies real context where MONAI's ``RandAffine`` would pad), flip
    (``flip_p``; ``one_axis``: one random axis as MONAI ``RandAxisFlip``, ``each_axis``:
    every axis independently) and rotation by k·90°, k ∈ {1, 2, 3} (``rotate_p``; in the
    plane of the first two array axes, MONAI ``RandRotate90``'s default). Ours before:
    ``translate_p = rotate_p = 1`` (k ∈ {0..3} in a random plane), ``smooth_p = 0``,
    ``flip = "each_axis"``.
    """

    translate: int = 10
    translate_p: float = 0.5
    flip_p: float = 0.5
    flip: str = "one_axis"
    rotate_p: float = 0.5
    smooth_p: float = 0.5
    smooth_sigma: tuple[float, float] = (0.25, 1.5)

    def __call__(self, cube: Array, rng: np.random.Generator) -> Array:
        sigma = None
        if rng.random() < self.smooth_p:
            sigma = tuple(float(v) for v in rng.uniform(*self.smooth_sigma, size=3))
        shift = (0, 0, 0)
        if rng.random() < self.translate_p:
            d = rng.integers(-self.translate, self.translate + 1, size=3)
            shift = (int(d[0]), int(d[1]), int(d[2]))
        x = centre_crop(np.asarray(cube, dtype=np.float32), PATCH_SIZE, shift)
        if sigma is not None:  # smoothing commutes with the integer shift (edges aside)
            x = ndimage.gaussian_filter(x, sigma=sigma, mode="nearest").astype(np.float32)
        if self.flip == "one_axis":
            if rng.random() < self.flip_p:
                x = np.flip(x, int(rng.integers(3)))
        else:
            for axis in range(3):
                if rng.random() < self.flip_p:
                    x = np.flip(x, axis)
        if rng.random() < self.rotate_p:
            x = np.rot90(x, k=int(rng.integers(1, 4)), axes=(0, 1))
        return np.ascontiguousarray(x, dtype=np.float32)
