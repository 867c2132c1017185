"""Centre of mass of a mask: equal to np.argwhere's mean (exactly) and scipy's center_of_mass."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mhub_fmcib.errors import SegmentationError
from mhub_fmcib.records import Volume
from mhub_fmcib.seeds.geometry import centre_of_mass_lps


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_centre_of_mass_matches_argwhere_and_scipy(layout: str) -> None:
    rng = np.random.default_rng({"C": 1, "F": 2, "strided": 3}[layout])
    for _ in range(60):
        shape = tuple(int(s) for s in rng.integers(1, 30, 3))
        mask = rng.random(shape) < rng.uniform(0.01, 0.4)
        if not mask.any():
            continue
        if layout == "F":
            mask = np.asfortranarray(mask)
        elif layout == "strided":
            mask = np.asfortranarray(mask)[::-1, :, ::-1]
        affine = np.eye(4)
        affine[:3, :3] = np.diag(rng.uniform(0.3, 3.0, 3)) @ np.diag(rng.choice([-1.0, 1.0], 3))
        affine[:3, 3] = rng.uniform(-300, 300, 3)
        volume = Volume(np.zeros(shape, np.float32), affine)
        seed = centre_of_mass_lps(mask, volume)
        exact = volume.index_to_lps(np.argwhere(mask).mean(axis=0))
        assert (seed.x, seed.y, seed.z) == tuple(float(v) for v in exact)
        scipy_lps = volume.index_to_lps(np.asarray(ndimage.center_of_mass(mask)))
        np.testing.assert_allclose(seed.as_array(), scipy_lps, rtol=0, atol=1e-9)


def test_empty_or_misplaced_mask_is_refused() -> None:
    volume = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4))
    with pytest.raises(SegmentationError, match="segment 3 is empty"):
        centre_of_mass_lps(np.zeros((4, 5, 6), bool), volume, "segment 3")
    with pytest.raises(SegmentationError, match=r"mask shape \(4, 5, 7\) differs"):
        centre_of_mass_lps(np.ones((4, 5, 7), bool), volume)
