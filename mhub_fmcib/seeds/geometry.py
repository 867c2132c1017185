"""Seed geometry (LPS mm): the centre of mass of a mask, whether a seed lies inside its mask
and inside the image."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import SeedError, SegmentationError
from ..patch import _outside_message
from ..records import LesionMask, SeedPoint, Volume


def centre_of_mass_lps(mask: npt.NDArray[np.bool_], volume: Volume, what: str = "segment") -> SeedPoint:
    """The centre of mass of a binary mask on ``volume``'s grid, in LPS mm.

    Args:
        mask: bool, shape ``volume.shape`` in (i, j, k) order.

    Raises:
        SegmentationError: the mask is empty or not on the volume's grid.
    """
    if mask.shape != volume.shape:
        raise SegmentationError(f"{what}: mask shape {mask.shape} differs from the image {volume.shape}")
    # Index coordinates of the set voxels, read in the mask's memory order (a flat scan is
    # several times faster than np.argwhere on a whole CT grid). The mean of these integers is
    # exact whatever their order, so it equals np.argwhere(mask).mean(axis=0).
    order: Literal["C", "F"] = "F" if mask.flags.f_contiguous and not mask.flags.c_contiguous else "C"
    flat = np.flatnonzero(mask.ravel(order=order))
    if flat.size == 0:
        raise SegmentationError(f"{what} is empty (no voxel set); there is no lesion to measure")
    idx = np.stack(np.unravel_index(flat, mask.shape, order=order), axis=1)
    centre = idx.mean(axis=0)
    x, y, z = volume.index_to_lps(centre)
    return SeedPoint(float(x), float(y), float(z))


def centre_of_mass_of_voxels(voxels: npt.NDArray[np.int64], volume: Volume, what: str = "segment") -> SeedPoint:
    """The centre of mass (LPS mm) of a mask given as its voxels, (N, 3) distinct (i, j, k)
    indices on ``volume``'s grid: equal to :func:`centre_of_mass_lps` of that mask (the mean
    of integer indices is exact in any order).

    Raises:
        SegmentationError: there is no voxel.
    """
    if len(voxels) == 0:
        raise SegmentationError(f"{what} is empty (no voxel set); there is no lesion to measure")
    centre = np.asarray(voxels).mean(axis=0)
    x, y, z = volume.index_to_lps(centre)
    return SeedPoint(float(x), float(y), float(z))


def seed_inside_lesion_mask(seed: SeedPoint, mask: LesionMask, volume: Volume) -> bool:
    """:func:`seed_inside_mask` for a cropped :class:`LesionMask`."""
    ijk = np.rint(volume.lps_to_index(seed.as_array())).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(volume.shape)):
        return False
    return bool(mask.contains(ijk.reshape(1, 3))[0])


def seed_inside_mask(seed: SeedPoint, mask: npt.NDArray[np.bool_], volume: Volume) -> bool:
    """Whether the voxel nearest to ``seed`` belongs to ``mask`` (a non-convex lesion's
    centre of mass may lie outside it)."""
    ijk = np.rint(volume.lps_to_index(seed.as_array())).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(volume.shape)):
        return False
    return bool(mask[tuple(ijk)])


def check_seed_in_volume(seed: SeedPoint, volume: Volume) -> None:
    """Raise :class:`SeedError` (explaining a likely RAS/LPS mix-up) if the seed is outside."""
    if not volume.contains_lps(seed):
        raise SeedError(_outside_message(volume, seed))
