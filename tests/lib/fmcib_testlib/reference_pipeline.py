"""The reference preprocessing rebuilt from MONAI's own transforms on the whole volume
(the oracle of our local patch code; facts from shared/fmcib-reference.md).

The image enters as a MONAI MetaTensor made from the Volume's array and MONAI's RAS affine
(what MONAI's ITKReader would produce), then: NormalizeIntensity(-1024, 3072) → Spacing(1 mm,
bilinear, align_corners, diagonal, zeros) → Orientation(LPS) → seed LPS→RAS, inverse affine,
int() → crop [c-25, c+25) clamped → Transpose (C,Z,Y,X) → SpatialPad(50) symmetric.
"""

from __future__ import annotations

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from mhub_fmcib.records import LPS_TO_RAS, SeedPoint, Volume


def reference_patch(volume: Volume, seed: SeedPoint, size: int = 50) -> np.ndarray:
    """float32 (size, size, size) in (z, y, x), computed by resampling the whole volume."""
    img = MetaTensor(
        torch.as_tensor(np.array(volume.array)[None]),
        affine=torch.as_tensor(LPS_TO_RAS @ volume.affine),
    )
    x = mt.NormalizeIntensity(subtrahend=-1024, divisor=3072)(img)
    x = mt.Spacing(pixdim=1, mode="bilinear", align_corners=True, diagonal=True, padding_mode="zeros")(x)
    x = mt.Orientation(axcodes="LPS", labels=None)(x)
    centre = np.linalg.inv(np.asarray(x.affine, dtype=np.float64)) @ np.array((-seed.x, -seed.y, seed.z, 1.0))
    c = [int(v) for v in centre[:3]]
    _, h, w, d = x.shape
    half = size // 2
    lo = [max(c[i] - half, 0) for i in range(3)]
    hi = [min(c[i] + half, n) for i, n in enumerate((h, w, d))]
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        raise ValueError("reference: invalid coordinates (crop is empty)")
    patch = x[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    patch = mt.Transpose(indices=(0, 3, 2, 1))(patch)
    patch = mt.SpatialPad(spatial_size=(size, size, size))(patch)
    return np.asarray(torch.as_tensor(patch), dtype=np.float32)[0]
