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

import math
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


def rand_scale_box(
    shape: tuple[int, ...], rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[list[int], list[int]]:
    """MONAI ``RandScaleCrop(s, random_size=False)`` with ``s ~ U(scale)`` drawn once for
    all axes: edge ``ceil(dim · s)`` per axis (25–50 voxels on a 50³ patch; 25 only when
    s = 0.5 exactly), start uniform integer in ``[0, dim − edge]``. Returns (start, edges)."""
    s = float(rng.uniform(*scale))
    edges = [min(math.ceil(d * s), d) for d in shape]
    start = [int(rng.integers(0, d - e + 1)) for d, e in zip(shape, edges, strict=True)]
    return start, edges


def rand_scale_crop(
    patch: Array, rng: np.random.Generator, scale: tuple[float, float], out_size: int = PATCH_SIZE
) -> tuple[Array, int]:
    """The authors' ``RandomResizedCrop3D``: the box of :func:`rand_scale_box` inside
    ``patch``, then trilinear resize (``align_corners=False``, MONAI
    ``Resize(mode="trilinear")``) to ``out_size``³. Returns the view and the box edge."""
    start, edges = rand_scale_box(patch.shape, rng, scale)
    box = patch[start[0] : start[0] + edges[0], start[1] : start[1] + edges[1], start[2] : start[2] + edges[2]]
    t = torch.from_numpy(np.ascontiguousarray(box, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(out_size,) * 3, mode="trilinear", align_corners=False)
    return out[0, 0].numpy(), edges[0]


def random_flip(x: Array, rng: np.random.Generator, p: float, mode: str) -> Array:
    """``one_axis``: with probability ``p`` flip one axis drawn uniformly (MONAI
    ``RandAxisFlip``); ``each_axis``: flip each axis independently with probability ``p``."""
    if mode == "one_axis":
        if rng.random() < p:
            x = np.flip(x, int(rng.integers(3)))
    else:
        for axis in range(3):
            if rng.random() < p:
                x = np.flip(x, axis)
    return np.ascontiguousarray(x)


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
    """One augmented view of a lesion's cached cube (R, R, R), or of a 50³ background
    patch, → (50, 50, 50) float32, in the authors' order: crop + resize, flip, histogram
    shift, smoothing, clamp below −1024 HU (normalised 0).

    With ``crop = "rand_scale"`` the crop is taken inside the central 50³ of the input
    (the lesion's patch, as the authors' 50³ positive); ``volume_fraction`` crops anywhere
    inside the cube."""

    config: AugmentConfig = field(default_factory=AugmentConfig)

    def __call__(self, cube: Array, rng: np.random.Generator) -> Array:
        c = self.config
        cube = np.asarray(cube)
        if c.crop == "rand_scale":
            o = (cube.shape[0] - PATCH_SIZE) // 2
            patch = cube[o : o + PATCH_SIZE, o : o + PATCH_SIZE, o : o + PATCH_SIZE]
            x, _ = rand_scale_crop(patch, rng, c.crop_scale)
        else:
            x = random_resized_crop(cube, rng, c.crop_scale, c.crop_ratio)
        x = random_flip(x, rng, c.flip_p, c.flip)
        if rng.random() < c.histogram_shift_p:
            x = histogram_shift(x, rng, c.histogram_points)
        if rng.random() < c.smooth_p:
            sig = rng.uniform(*c.smooth_sigma, size=3)
            x = gaussian_smooth(x, (float(sig[0]), float(sig[1]), float(sig[2])))
        if c.clamp_air:
            x = np.maximum(x, np.float32(0.0))
        return np.ascontiguousarray(x, dtype=np.float32)
