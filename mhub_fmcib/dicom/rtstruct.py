"""Read DICOM RT Structure Sets (RTSTRUCT) and rasterise their ROIs on a CT grid.

An ROI is drawn as planar polygons in LPS mm (``ContourData``), one or more per slice. We
place each ``CLOSED_PLANAR`` contour on the CT grid and fill it:

* **Plane.** The contour's points are mapped to continuous CT indices through
  ``inv(ct.volume.affine)``. Their ``k`` must be constant (spread at most
  :data:`PLANE_ATOL_MM` along the slice normal) and lie on a CT slice: within
  :data:`SLICE_ATOL` (a fraction of the slice spacing) of an integer ``k`` inside the
  series. Anything else (an oblique contour, one drawn between the slices of another
  reconstruction, one outside the scanned range) raises :class:`SegmentationError` naming
  the ROI and the contour's position.
* **Fill.** A voxel belongs to the ROI when its centre is inside the contour by the
  even-odd rule. All closed contours of an ROI on one slice are combined by XOR, so a
  contour nested in another is a hole (the way DICOM encodes holes, and also what the
  newer ``CLOSEDPLANAR_XOR`` type states explicitly).
* **Edges.** A voxel centre exactly on an edge is decided by the half-open convention of
  scanline fills: a square with corners at voxel centres ``i0..i1`` and ``j0..j1`` covers
  ``i0 <= i < i1`` and ``j0 <= j < j1`` (points on its low-``i`` and low-``j`` edges are
  in, those on its high edges are out). Two ROIs sharing an edge thus never both claim
  the voxels on it. Continuous indices within :data:`EDGE_SNAP` of an integer are snapped
  to it first, so the rule does not depend on decimal rounding of ``ContourData``.

``POINT`` contours are not rasterised; an ROI made of one ``POINT`` (a marker) can serve
as a seed through :func:`roi_point`. ``OPEN_PLANAR`` and ``OPEN_NONPLANAR`` contours
enclose nothing and are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import SegmentationError
from ..records import SeedPoint
from .ct import CtSeries
from .read import invalid_dicom_error, read_dataset
from .uids import RT_STRUCTURE_SET_STORAGE

if TYPE_CHECKING:
    import pydicom

#: Largest spread (mm, along the CT slice normal) of a closed contour's points.
PLANE_ATOL_MM = 0.05
#: Largest distance of a contour's plane from the nearest CT slice, as a fraction of the
#: slice spacing.
SLICE_ATOL = 0.25
#: Rows x edges evaluated at once by :func:`fill_polygons` (bounds its memory).
FILL_BLOCK = 1 << 20
#: Continuous indices within this many voxels of an integer are snapped to it.
EDGE_SNAP = 1e-4

CLOSED_TYPES = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})
KNOWN_TYPES = CLOSED_TYPES | {"POINT", "OPEN_PLANAR", "OPEN_NONPLANAR"}


@dataclass(frozen=True, eq=False)
class Contour:
    """One item of an ROI's ContourSequence.

    Attributes:
        geometric_type: ContourGeometricType (``CLOSED_PLANAR``, ``POINT``, ...).
        points: float64, shape (N, 3), LPS mm, read-only.
    """

    geometric_type: str
    points: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        p = np.asarray(self.points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1:
            raise ValueError(f"contour points must have shape (N, 3) with N >= 1, got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("contour points must be finite")
        p = p.copy()
        p.flags.writeable = False
        object.__setattr__(self, "points", p)


@dataclass(frozen=True)
class RoiInfo:
    """Description of one ROI of a structure set.

    Attributes:
        number: ROINumber.
        name: ROIName (``"ROI <number>"`` when absent).
        interpreted_type: RTROIInterpretedType from RTROIObservationsSequence (``GTV``,
            ``ORGAN``, ``MARKER``, ...), ``None`` if the ROI has no observation.
        frame_of_reference_uid: ReferencedFrameOfReferenceUID of the ROI, or ``None``.
    """

    number: int
    name: str
    interpreted_type: str | None
    frame_of_reference_uid: str | None


@dataclass(frozen=True)
class Roi:
    """An ROI with its contours.

    ``problem`` is set when the ROI's contour data cannot be used (malformed
    ``ContourData``); it is raised by :func:`roi_mask_on_ct` and :func:`roi_point`, so one
    damaged ROI does not hide the others of the same file.
    """

    info: RoiInfo
    contours: tuple[Contour, ...]
    problem: str | None = None


@dataclass(frozen=True)
class RtStruct:
    """An RTSTRUCT instance: identity, references and ROIs."""

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    referenced_series_uids: tuple[str, ...]
    rois: tuple[Roi, ...]

    def roi(self, number: int) -> Roi:
        """The ROI with ROINumber ``number``.

        Raises:
            SegmentationError: there is no such ROI.
        """
        for r in self.rois:
            if r.info.number == number:
                return r
        have = ", ".join(f"{r.info.number}:{r.info.name}" for r in self.rois) or "none"
        raise SegmentationError(f"RTSTRUCT {self.path} has no ROI number {number} (ROIs: {have})")


def _text(value: object) -> str:
    return str(value).strip() if value is not None else ""


def _parse_contours(item: pydicom.Dataset, where: str) -> tuple[Contour, ...]:
    out = []
    for n, c in enumerate(item.get("ContourSequence", []) or [], start=1):
        gtype = _text(c.get("ContourGeometricType")).upper()
        if gtype not in KNOWN_TYPES:
            raise SegmentationError(f"{where} contour {n}: unknown ContourGeometricType {gtype!r}")
        raw = c.get("ContourData")
        try:
            values = np.asarray([float(v) for v in (raw if raw is not None else [])], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise SegmentationError(f"{where} contour {n}: ContourData is not numeric ({e})") from e
        if values.size == 0 or values.size % 3:
            raise SegmentationError(
                f"{where} contour {n}: ContourData has {values.size} values, not a positive multiple of 3 (x, y, z)"
            )
        declared = c.get("NumberOfContourPoints")
        if declared is not None and _text(declared) and int(declared) != values.size // 3:
            raise SegmentationError(
                f"{where} contour {n}: NumberOfContourPoints is {int(declared)} but ContourData holds "
                f"{values.size // 3} points"
            )
        if not np.all(np.isfinite(values)):
            raise SegmentationError(f"{where} contour {n}: ContourData has non-finite values")
        out.append(Contour(geometric_type=gtype, points=values.reshape(-1, 3)))
    return tuple(out)


def _open_rtstruct(path: Path) -> pydicom.Dataset:
    """The file read and checked to be an RT Structure Set with ROIs."""
    try:
        ds = read_dataset(Path(path))
    except (invalid_dicom_error(), OSError, EOFError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise SegmentationError(f"RTSTRUCT {path} cannot be read: {type(e).__name__}: {e}") from e
    sop_class = _text(ds.get("SOPClassUID"))
    if sop_class != RT_STRUCTURE_SET_STORAGE:
        raise SegmentationError(
            f"{path} is not an RT Structure Set (SOPClassUID {sop_class or 'missing'}, "
            f"expected {RT_STRUCTURE_SET_STORAGE})"
        )
    if "StructureSetROISequence" not in ds:
        raise SegmentationError(f"RTSTRUCT {path} has no StructureSetROISequence; it defines no ROI")
    return ds


def _references(ds: pydicom.Dataset) -> tuple[str, list[str]]:
    """The structure set's Frame of Reference (top level, else the one referenced) and the
    referenced series UIDs."""
    ref_fors: list[str] = []
    series: list[str] = []
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        if ref_for.get("FrameOfReferenceUID"):
            ref_fors.append(_text(ref_for.FrameOfReferenceUID))
        for study in ref_for.get("RTReferencedStudySequence", []) or []:
            for s in study.get("RTReferencedSeriesSequence", []) or []:
                if s.get("SeriesInstanceUID"):
                    series.append(_text(s.SeriesInstanceUID))
    top_for = _text(ds.get("FrameOfReferenceUID")) or (ref_fors[0] if len(set(ref_fors)) == 1 else "")
    return top_for, series


def _by_roi_number(items: Sequence[pydicom.Dataset]) -> dict[int, pydicom.Dataset]:
    """Items of a sequence keyed by their ReferencedROINumber (the first one per number)."""
    out: dict[int, pydicom.Dataset] = {}
    for item in items:
        if item.get("ReferencedROINumber") is not None:
            out.setdefault(int(item.ReferencedROINumber), item)
    return out


def _parse_rois(ds: pydicom.Dataset, path: Path, top_for: str) -> list[Roi]:
    """Every ROI of StructureSetROISequence with its observation type and contours."""
    interpreted = {
        n: _text(obs.RTROIInterpretedType)
        for n, obs in _by_roi_number(
            [o for o in ds.get("RTROIObservationsSequence", []) or [] if _text(o.get("RTROIInterpretedType"))]
        ).items()
    }
    contour_items = _by_roi_number(ds.get("ROIContourSequence", []) or [])
    rois: list[Roi] = []
    seen: set[int] = set()
    for item in ds.StructureSetROISequence:
        try:
            number = int(item.ROINumber)
        except (AttributeError, TypeError, ValueError) as e:
            raise SegmentationError(f"RTSTRUCT {path}: an ROI has no valid ROINumber ({e})") from e
        if number in seen:
            raise SegmentationError(f"RTSTRUCT {path}: ROINumber {number} is used by more than one ROI")
        seen.add(number)
        info = RoiInfo(
            number=number,
            name=_text(item.get("ROIName")) or f"ROI {number}",
            interpreted_type=interpreted.get(number),
            frame_of_reference_uid=_text(item.get("ReferencedFrameOfReferenceUID")) or top_for or None,
        )
        where = f"RTSTRUCT {path} ROI {number} ({info.name})"
        try:
            contours = _parse_contours(contour_items[number], where) if number in contour_items else ()
            rois.append(Roi(info=info, contours=contours))
        except SegmentationError as e:
            rois.append(Roi(info=info, contours=(), problem=str(e)))
    return rois


def read_rtstruct(path: Path) -> RtStruct:
    """Read an RTSTRUCT file (header and contours; it has no pixel data).

    Raises:
        SegmentationError: the file is unreadable, not an RT Structure Set, or lacks the
            ROI sequences. Malformed contours of one ROI are recorded on that ROI instead
            (see :class:`Roi`).
    """
    path = Path(path)
    ds = _open_rtstruct(path)
    top_for, series = _references(ds)
    return RtStruct(
        path=path,
        sop_instance_uid=_text(ds.get("SOPInstanceUID")),
        study_instance_uid=_text(ds.get("StudyInstanceUID")),
        series_instance_uid=_text(ds.get("SeriesInstanceUID")),
        frame_of_reference_uid=top_for or None,
        referenced_series_uids=tuple(dict.fromkeys(series)),
        rois=tuple(_parse_rois(ds, path, top_for)),
    )


def list_rois(rt: RtStruct) -> list[RoiInfo]:
    """The ROIs of ``rt`` in file order."""
    return [r.info for r in rt.rois]


def select_rois(rt: RtStruct, wanted: Sequence[str]) -> list[RoiInfo]:
    """The ROIs to measure: all, or those named by ROINumber or ROIName in ``wanted``
    (mirrors :func:`mhub_fmcib.dicom.seg.select_segments`)."""
    if not wanted:
        return list_rois(rt)
    return [r.info for r in rt.rois if str(r.info.number) in wanted or r.info.name in wanted]


def roi_point(rt: RtStruct, roi_number: int) -> SeedPoint | None:
    """The point of an ROI made of a single one-point ``POINT`` contour (a marker), else ``None``.

    Raises:
        SegmentationError: no such ROI, its contours are malformed, or it holds several
            points (which one is the lesion is ambiguous).
    """
    roi = rt.roi(roi_number)
    if roi.problem:
        raise SegmentationError(roi.problem)
    points = [c for c in roi.contours if c.geometric_type == "POINT"]
    if not points or any(c.geometric_type in CLOSED_TYPES for c in roi.contours):
        return None
    if len(points) > 1 or points[0].points.shape[0] != 1:
        n = sum(c.points.shape[0] for c in points)
        raise SegmentationError(
            f"RTSTRUCT {rt.path} ROI {roi_number} ({roi.info.name}) has {n} POINT coordinates; "
            "a seed needs exactly one. Split it into one ROI per lesion."
        )
    x, y, z = points[0].points[0]
    return SeedPoint(float(x), float(y), float(z))


def _snap(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r = np.rint(a)
    out: npt.NDArray[np.float64] = np.where(np.abs(a - r) <= EDGE_SNAP, r, a)
    return out


def fill_polygons(polygons: Sequence[npt.NDArray[np.float64]], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Even-odd fill of closed polygons on a 2D grid of voxel centres.

    Args:
        polygons: each (N, 2) float64 continuous indices (i, j); closed implicitly (the last
            vertex joins the first). Several polygons combine by XOR.
        shape: (I, J) of the grid.

    Returns:
        bool (I, J): True where the voxel centre (i, j) is inside, with the half-open edge
        rule of the module docstring (a crossing at ``x`` counts for centres ``i >= ceil(x)``).
    """
    ni, nj = shape
    mask = np.zeros(shape, dtype=bool)
    edges = []
    for poly in polygons:
        p = _snap(np.asarray(poly, dtype=np.float64))
        if p.shape[0] < 3:
            continue
        q = np.roll(p, -1, axis=0)
        edges.append(np.concatenate([p, q], axis=1))
    if not edges:
        return mask
    e = np.concatenate(edges)  # (E, 4): i0, j0, i1, j1
    x0, y0, x1, y1 = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
    jlo = max(0, int(np.ceil(min(y0.min(), y1.min()))))
    jhi = min(nj - 1, int(np.floor(max(y0.max(), y1.max()))))
    if jhi < jlo:
        return mask
    dy = np.where(y1 == y0, 1.0, y1 - y0)
    slope = (x1 - x0) / dy
    block = max(1, FILL_BLOCK // e.shape[0])  # rows per block, bounding memory to ~FILL_BLOCK cells
    for start in range(jlo, jhi + 1, block):
        rows = np.arange(start, min(start + block, jhi + 1), dtype=np.float64)[:, None]  # (R, 1)
        crosses = (y0 > rows) != (y1 > rows)  # (R, E): half-open in j
        xint = _snap(x0 + (rows - y0) * slope)
        # parity of crossings at or left of each centre: the count of ceil(x) <= i, i in [0, I)
        col = np.clip(np.ceil(xint), 0, ni).astype(np.int64)
        counts = np.zeros((rows.shape[0], ni + 1), dtype=np.int64)
        r_idx = np.broadcast_to(np.arange(rows.shape[0])[:, None], crosses.shape)
        np.add.at(counts, (r_idx[crosses], col[crosses]), 1)
        inside = (np.cumsum(counts[:, :ni], axis=1) % 2).astype(bool)  # (R, I)
        mask[:, start : start + rows.shape[0]] = inside.T
    return mask


def roi_mask_on_ct(rt: RtStruct, roi_number: int, ct: CtSeries) -> npt.NDArray[np.bool_]:
    """ROI ``roi_number`` rasterised on the CT grid, bool shape (I, J, K) (see module docstring).

    An ROI without closed contours gives an all-False mask (the caller reports it as empty).

    Raises:
        SegmentationError: no such ROI, malformed contours, the ROI's Frame of Reference is
            not the CT's, or a contour is not on one of the CT's slices.
    """
    roi = rt.roi(roi_number)
    what = f"RTSTRUCT {rt.path} ROI {roi_number} ({roi.info.name})"
    if roi.problem:
        raise SegmentationError(roi.problem)
    ct_for = ct.frame_of_reference_uid
    roi_for = roi.info.frame_of_reference_uid
    if roi_for and ct_for and roi_for != ct_for:
        raise SegmentationError(
            f"{what} is in Frame of Reference {roi_for}, CT series {ct.series_instance_uid} in "
            f"{ct_for}; its contours cannot be placed on that CT. Use the series it was drawn on."
        )
    vol = ct.volume
    shape = vol.shape
    k_step_mm = vol.spacing[2]
    inv = np.linalg.inv(vol.affine)
    by_slice: dict[int, list[npt.NDArray[np.float64]]] = {}
    for n, c in enumerate(roi.contours, start=1):
        if c.geometric_type not in CLOSED_TYPES:
            continue
        ijk = c.points @ inv[:3, :3].T + inv[:3, 3]
        k = ijk[:, 2]
        z_desc = f"z = {float(np.mean(c.points[:, 2])):.2f} mm"
        spread_mm = float(np.ptp(k)) * k_step_mm
        if spread_mm > PLANE_ATOL_MM:
            raise SegmentationError(
                f"{what} contour {n} ({z_desc}) is not in one CT slice plane: its points span "
                f"{spread_mm:.3f} mm along the slice normal (tolerance {PLANE_ATOL_MM} mm). It was "
                "drawn on a series of another orientation; use that series."
            )
        k_mean = float(np.mean(k))
        k_slice = int(np.rint(k_mean))
        if abs(k_mean - k_slice) > SLICE_ATOL:
            raise SegmentationError(
                f"{what} contour {n} ({z_desc}) lies between CT slices {int(np.floor(k_mean))} and "
                f"{int(np.floor(k_mean)) + 1} (k = {k_mean:.3f}); it was drawn on another reconstruction "
                f"of this Frame of Reference. Use the series the RTSTRUCT references."
            )
        if not 0 <= k_slice < shape[2]:
            raise SegmentationError(
                f"{what} contour {n} ({z_desc}) is at slice {k_slice}, outside CT series "
                f"{ct.series_instance_uid} (slices 0..{shape[2] - 1}); the CT does not cover the ROI."
            )
        by_slice.setdefault(k_slice, []).append(ijk[:, :2])
    mask = np.zeros(shape, dtype=bool)
    for k_slice, polys in by_slice.items():
        mask[:, :, k_slice] = fill_polygons(polys, (shape[0], shape[1]))
    return mask
