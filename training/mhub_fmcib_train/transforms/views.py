"""SimCLR views of a lesion cube: random resized 3D crop, flips, histogram shift, smoothing.

All functions take and return float32 arrays in normalised units ``(HU + 1024) / 3072``,
(z, y, x), and draw from an explicit ``numpy.random.Generator`` (so a view is a pure
function of its seed: exact resume, any number of loader workers). The reference applies
its normalisation last, to HU; every operation here commutes with that affine map (crop,
flip, trilinear resize and a normalised Gaussian kernel are linear and preserve
constants; the histogram shift is defined between the cube's own minimum and maximum), so
augmenting normalised values is the same as augmenting HU and normalising after.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from mhub_fmcib.records import PATCH_SIZE

from ..config import AugmentConfig

Array = npt.NDArray[np.float32]


def random_resized_crop(
    cube: Array, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float],
    out_size: int = PATCH_SIZE,
) -> Array:  # fmt: skip
    """Crop a box whose volume is ``U(scale) · out_size³`` (each axis stretched by a
    log-uniform factor in ``ratio``, product 1), anywhere inside ``cube``, and resize it
    trilinearly to ``out_size³``."""
    s = rng.uniform(*scale)
    logs = rng.uniform(np.log(ratio[0]), np.log(ratio[1]), size=3)
    logs -= logs.mean()
    edge = out_size * s ** (1 / 3) * np.exp(logs)
    size = np.clip(np.round(edge).astype(int), 8, np.asarray(cube.shape))
    start = [int(rng.integers(0, cube.shape[a] - size[a] + 1)) for a in range(3)]
    box = cube[start[0] : start[0] + size[0], start[1] : start[1] + size[1], start[2] : start[2] + size[2]]
    t = torch.from_numpy(np.ascontiguousarray(box, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(out_size,) * 3, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def histogram_shift(x: Array, rng: np.random.Generator, n_points: int = 10) -> Array:
    """MONAI ``RandHistogramShift``: a random monotone piecewise-linear intensity map
    between the cube's minimum and maximum (``n_points`` control points, ends fixed)."""
    ref = np.linspace(0.0, 1.0, n_points)
    flo = ref.copy()
    for i in range(1, n_points - 1):
        flo[i] = rng.uniform(flo[i - 1], flo[i + 1])
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return x.astype(np.float32, copy=True)
    return np.interp(x, lo + ref * (hi - lo), lo + flo * (hi - lo)).astype(np.float32)


def gaussian_smooth(x: Array, sigma: tuple[float, float, float]) -> Array:
    """Gaussian smoothing, ``sigma`` per axis in voxels, edges replicated (a normalised
    kernel, so constants are preserved)."""
    return ndimage.gaussian_filter(x, sigma=sigma, mode="nearest", truncate=4.0).astype(np.float32)


@dataclass(frozen=True)
class SimCLRView:
    """One augmented view of a cached cube: (R, R, R) → (50, 50, 50) float32."""

    config: AugmentConfig = field(default_factory=AugmentConfig)

    def __call__(self, cube: Array, rng: np.random.Generator) -> Array:
        c = self.config
        x = random_resized_crop(np.asarray(cube), rng, c.crop_scale, c.crop_ratio)
        for axis in range(3):
            if rng.random() < c.flip_p:
                x = np.flip(x, axis)
        x = np.ascontiguousarray(x)
        if rng.random() < c.histogram_shift_p:
            x = histogram_shift(x, rng, c.histogram_points)
        if rng.random() < c.smooth_p:
            sig = rng.uniform(*c.smooth_sigma, size=3)
            x = gaussian_smooth(x, (float(sig[0]), float(sig[1]), float(sig[2])))
        return x
