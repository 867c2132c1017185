"""Fine-tuning augmentations: translations (±t voxels), axis flips, 90° rotations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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
    """Random translation (uniform integer in ±``translate`` per axis), a flip per axis
    (p 0.5) and a rotation by k·90° (k uniform 0–3) in a random axis plane."""

    translate: int = 10
    flip_p: float = 0.5

    def __call__(self, cube: Array, rng: np.random.Generator) -> Array:
        shift = rng.integers(-self.translate, self.translate + 1, size=3)
        x = centre_crop(cube, PATCH_SIZE, (int(shift[0]), int(shift[1]), int(shift[2])))
        for axis in range(3):
            if rng.random() < self.flip_p:
                x = np.flip(x, axis)
        planes = ((0, 1), (0, 2), (1, 2))
        x = np.rot90(x, k=int(rng.integers(4)), axes=planes[int(rng.integers(3))])
        return np.ascontiguousarray(x, dtype=np.float32)
