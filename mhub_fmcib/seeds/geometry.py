"""Seed points: centres of mass of segments, or points given by the user (LPS mm)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, SeedError, SegmentationError
from ..patch import _outside_message
from ..records import SeedPoint, Volume

SEED_COLUMNS = ("image_path", "coordX", "coordY", "coordZ")


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


@dataclass(frozen=True)
class SeedRow:
    """One row of a reference-format seeds CSV.

    Attributes:
        row_number: 1-based data row number in the file (header excluded).
        image: the image file or DICOM series folder, resolved against the CSV's folder.
        seed: LPS mm.
        passthrough: the other columns, in file order.
    """

    row_number: int
    image: Path
    seed: SeedPoint
    passthrough: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BadSeedRow:
    """A seeds CSV row that cannot be used, and why."""

    row_number: int
    reason: str


def read_seeds_csv(path: Path) -> tuple[list[SeedRow], list[BadSeedRow]]:
    """Read a seeds CSV in the reference format (``image_path, coordX, coordY, coordZ``,
    LPS mm; other columns are passed through). Relative image paths are resolved against
    the CSV's folder.

    Raises:
        ConfigError: the file is missing or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"seeds file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in SEED_COLUMNS if c not in header]
        if missing:
            raise ConfigError(
                f"seeds file {path} lacks column(s) {', '.join(missing)}; the reference format "
                f"has columns {', '.join(SEED_COLUMNS)} (coordinates in LPS mm); found {header}"
            )
        rows: list[SeedRow] = []
        bad: list[BadSeedRow] = []
        for n, raw in enumerate(reader, start=1):
            rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            try:
                seed = SeedPoint(float(rec["coordX"]), float(rec["coordY"]), float(rec["coordZ"]))
            except ValueError as e:
                bad.append(BadSeedRow(n, f"{path} row {n}: coordinates must be numbers in LPS mm ({e})"))
                continue
            if not rec["image_path"]:
                bad.append(BadSeedRow(n, f"{path} row {n}: empty image_path"))
                continue
            image = Path(rec["image_path"])
            if not image.is_absolute():
                image = path.parent / image
            extra = tuple((k, v) for k, v in rec.items() if k not in SEED_COLUMNS)
            rows.append(SeedRow(row_number=n, image=image, seed=seed, passthrough=extra))
    return rows, bad
