"""Series choice from DICOM headers: the image a seeds CSV row names, when it is a folder
holding one or several CT series (the one whose extent holds the seeds is used)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DicomImportError
from ..image_io import read_image
from ..records import SeedPoint, Volume
from .calibration import check_rescale
from .ct import CtSeries, assemble_ct
from .index import InstanceKind, InstanceRecord, index_folder
from .read import read_dataset

log = logging.getLogger(__name__)


def series_extent_lps(records: Sequence[InstanceRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (min, max) in LPS mm of a single-frame series' voxel centres, from
    headers only (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows, Columns)."""
    pts = []
    for rec in records:
        ds = read_dataset(rec.path, stop_before_pixels=True)
        try:
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            dr, dc = (float(v) for v in ds.PixelSpacing)
            rows, cols = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError) as e:
            raise DicomImportError(f"{rec.path}: geometry tags missing or malformed ({e})") from e
        for i in (0, cols - 1):
            for j in (0, rows - 1):
                pts.append(ipp + iop[:3] * dc * i + iop[3:] * dr * j)
    arr = np.asarray(pts)
    return arr.min(axis=0), arr.max(axis=0)


def _holds(lo: np.ndarray, hi: np.ndarray, seeds: Sequence[SeedPoint]) -> bool:
    return bool(seeds) and all(np.all(s.as_array() >= lo - 1e-3) and np.all(s.as_array() <= hi + 1e-3) for s in seeds)


def series_for_seeds(path: Path, series: dict[str, list[InstanceRecord]], seeds: Sequence[SeedPoint]) -> str:
    """The UID of the one CT series of ``series`` whose extent holds every seed.

    Raises:
        DicomImportError: none or several do (the message lists each series' extent).
    """
    extents = {uid: series_extent_lps(recs) for uid, recs in series.items()}
    holding = [uid for uid, (lo, hi) in extents.items() if _holds(lo, hi, seeds)]
    if len(holding) != 1:
        listing = "; ".join(
            f"{uid} (LPS {np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} mm)"
            for uid, (lo, hi) in extents.items()
        )
        raise DicomImportError(
            f"{path} holds {len(series)} CT series and {len(holding) or 'none'} of them contain(s) every seed of "
            f"this image: {listing}. Point image_path at the folder of one series."
        )
    log.info("%s: CT series %s chosen: the only one whose extent holds the seeds", path, holding[0])
    return holding[0]


def load_image(path: Path, seeds: Sequence[SeedPoint] = (), *, decode: bool = True) -> tuple[Volume, CtSeries | None]:
    """An image file, or a folder holding a DICOM CT series, as a Volume in HU.

    A folder with several CT series (a study) is resolved by geometry
    (:func:`series_for_seeds`). With ``decode=False`` a DICOM series is returned undecoded
    (geometry only; see :func:`mhub_fmcib.dicom.ct.decode_slices`).
    """
    if path.is_file():
        try:
            return read_image(path), None
        except (ValueError, FileNotFoundError) as e:
            raise DicomImportError(str(e)) from e
    if not path.is_dir():
        raise DicomImportError(f"image {path} does not exist")
    series = index_folder(path).by_series(InstanceKind.CT)
    if not series:
        raise DicomImportError(
            f"{path} holds no CT series; a seeds CSV image_path must name an image file or a "
            "folder with a DICOM CT series"
        )
    uid = next(iter(series)) if len(series) == 1 else series_for_seeds(path, series, seeds)
    ct = assemble_ct(series[uid], decode=decode)
    check_rescale(ct)
    return ct.volume, ct
