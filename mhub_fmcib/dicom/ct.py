"""Assemble a CT series (one file per slice) into a :class:`~mhub_fmcib.records.Volume` in HU.

Slices are sorted by their position along the slice normal. A series that would give wrong
geometry is refused with a :class:`~mhub_fmcib.errors.GeometryError` naming the series:
missing or duplicate positions, non-uniform spacing, mixed orientations or pixel grids,
gantry tilt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import DicomImportError, GeometryError
from ..records import Volume
from .index import InstanceRecord, with_record_uids
from .read import read_dataset, transfer_syntax
from .uids import DECODE_ERRORS, JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS, READ_ERRORS, plausible_uid

if TYPE_CHECKING:
    import pydicom

#: Relative tolerance on slice spacing uniformity (fraction of the median spacing).
SPACING_RTOL = 0.01
#: Tolerance on direction cosines.
ORIENTATION_ATOL = 1e-4
#: In-plane drift of slice origins (mm) above which the series counts as tilted.
TILT_ATOL_MM = 0.05
#: Largest series we assemble (voxels): 2048 x 2048 x 4096 int16 is 32 GiB.
MAX_VOXELS = 2_000_000_000


@dataclass(frozen=True, eq=False)
class CtSeries:
    """An assembled CT series.

    Attributes:
        volume: the whole series' grid, (I, J, K) = (columns, rows, slices sorted along the
            normal), LPS affine. When every slice is decoded (``decoded is None``) its array
            holds HU as float32; otherwise the array is a NaN placeholder of that shape that
            takes no memory (geometry only) and the pixels are in ``slabs``.
        datasets: the slices' datasets, in the same order as ``k`` (pixel data removed once
            decoded).
        dropped: (path, reason) of files left out (damaged duplicates of a slice).
        paths: the file of each slice, in the same order as ``k``.
        decoded: the k indices whose pixels are decoded; ``None``: all of them (in ``volume``).
        slabs: the decoded slices when not all are: one Volume (HU float32) per run of
            consecutive decoded slices, each with its own LPS affine (``volume``'s, moved
            along k to the run's first slice): see :func:`mhub_fmcib.patch.slab_offset`.
        hu_range: (min, max) HU over the decoded voxels (``None`` before decoding).
    """

    volume: Volume
    datasets: tuple[pydicom.Dataset, ...]
    dropped: tuple[tuple[str, str], ...] = ()
    paths: tuple[str, ...] = ()
    decoded: frozenset[int] | None = None
    slabs: tuple[Volume, ...] = ()
    hu_range: tuple[float, float] | None = None

    @property
    def series_instance_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str | None:
        v = self.datasets[0].get("FrameOfReferenceUID")
        return str(v) if v else None

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(str(d.SOPInstanceUID) for d in self.datasets)


def _floats(ds: pydicom.Dataset, keyword: str, n: int, series: str, path: str) -> npt.NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None:
        raise GeometryError(
            f"series {series}: {path} has no {keyword}; it cannot be placed in 3D. "
            "Remove the file from the input or restore the tag."
        )
    try:
        arr = np.asarray([float(v) for v in (value if n > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise GeometryError(f"series {series}: {path} has an unreadable {keyword} {value!r}") from e
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"series {series}: {path} has a malformed {keyword} {value!r}")
    return arr


#: Values larger than this (bytes) are read from the file only when accessed: the pixel data
#: of a slice stays on disk until the slice is decoded, so a long series costs only headers.
DEFER_BYTES = 64 * 1024


def _read(rec: InstanceRecord) -> pydicom.Dataset:
    try:
        return with_record_uids(read_dataset(rec.path, defer_size=DEFER_BYTES), rec)
    except READ_ERRORS as e:
        raise DicomImportError(f"series {rec.series_instance_uid}: cannot read {rec.path}: {e}") from e


def _check_native_length(ds: pydicom.Dataset, series: str, path: str) -> None:
    """Refuse uncompressed pixel data whose length disagrees with Rows x Columns x
    BitsAllocated x SamplesPerPixel x NumberOfFrames (pydicom would silently drop or pad the
    difference, giving an image of the wrong shape)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    syntax = transfer_syntax(ds)
    if not syntax or syntax.is_encapsulated or syntax == DeflatedExplicitVRLittleEndian:
        return
    length = _pixel_data_length(ds)
    if length is None:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as e:
        raise DicomImportError(f"series {series}: {path} has unreadable pixel description tags ({e})") from e
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if length not in (expected, expected + 1):  # one pad byte to an even length
        raise DicomImportError(
            f"series {series}: {path} holds {length} bytes of pixel data, but its header "
            f"({frames} frame(s) of {cols}x{rows}, {bits} bits, {samples} sample(s)) implies {expected}; "
            "the header or the file is damaged. Remove the file or re-export the series."
        )


def _pixel_data_length(ds: pydicom.Dataset) -> int | None:
    """Bytes of PixelData, without reading a deferred value from the file; ``None`` if absent."""
    if "PixelData" not in ds:
        return None
    elem = ds.get_item("PixelData")
    value = getattr(elem, "value", None)
    if value is None:
        length = getattr(elem, "length", None)
        return int(length) if length is not None else None
    return len(value)


#: Decoder plugin to use where several are installed, by transfer syntax: measured on the
#: sample CT (512 x 512 JPEG-LS), pyjpegls decodes in 5.8 ms per slice, pylibjpeg (pydicom's
#: default pick) in 19 ms, with identical output (see benchmarks/README.md).
PREFERRED_DECODER: dict[str, str] = {JPEG_LS_LOSSLESS: "pyjpegls", JPEG_LS_NEAR_LOSSLESS: "pyjpegls"}


def decode_pixels(ds: pydicom.Dataset) -> npt.NDArray[np.generic]:
    """``ds.pixel_array``, decoded by the fastest installed plugin of its transfer syntax
    (:data:`PREFERRED_DECODER`; pydicom's default choice otherwise)."""
    from pydicom.pixels import get_decoder

    tsyntax = transfer_syntax(ds)
    plugin = PREFERRED_DECODER.get(tsyntax)
    if plugin is not None and plugin in get_decoder(tsyntax).available_plugins:
        ds.pixel_array_options(decoding_plugin=plugin)
    return ds.pixel_array


def _pixels(ds: pydicom.Dataset, series: str, path: str) -> npt.NDArray[np.float32]:
    """HU of one slice (its native pixel length was checked by :func:`assemble_ct`)."""
    try:
        px = decode_pixels(ds)
    except DECODE_ERRORS as e:
        raise DicomImportError(
            f"series {series}: pixel data of {path} cannot be decoded ({type(e).__name__}: {e}). "
            "If it is compressed, install the matching pylibjpeg/pyjpegls plugin; otherwise "
            "the file is damaged."
        ) from e
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    hu: npt.NDArray[np.float32] = px.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return hu


def _check_uids(records: Sequence[InstanceRecord]) -> None:
    """Refuse UIDs that are not UIDs ('../../etc', '1.2/3'): they would end up in outputs."""
    for r in records:
        for what, uid in (
            ("SeriesInstanceUID", r.series_instance_uid),
            ("StudyInstanceUID", r.study_instance_uid),
            ("SOPInstanceUID", r.sop_instance_uid),
            ("FrameOfReferenceUID", r.frame_of_reference_uid or "1"),
        ):
            if not plausible_uid(uid):
                raise DicomImportError(
                    f"series {r.series_instance_uid!r}: {r.path} has {what} {uid!r}, which is not a DICOM UID "
                    "(digits and dots, at most 64 characters); fix the export that produced it."
                )


@dataclass(frozen=True, eq=False)
class _Plane:
    """The in-plane geometry every slice of a series must share."""

    iop: npt.NDArray[np.float64]
    rows: int
    cols: int
    spacing: npt.NDArray[np.float64]

    @property
    def row_dir(self) -> npt.NDArray[np.float64]:
        return self.iop[:3]

    @property
    def col_dir(self) -> npt.NDArray[np.float64]:
        return self.iop[3:]

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        n: npt.NDArray[np.float64] = np.cross(self.row_dir, self.col_dir)
        return n


def _plane_of(first: pydicom.Dataset, path: str, n_slices: int, series: str) -> _Plane:
    """Orientation, size and pixel spacing of the first slice, checked."""
    iop = _floats(first, "ImageOrientationPatient", 6, series, path)
    row_dir, col_dir = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(float(row_dir @ col_dir)) > 1e-3
    ):
        raise GeometryError(f"series {series}: ImageOrientationPatient {iop.tolist()} is not orthonormal")
    rows, cols = int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise GeometryError(f"series {series}: {path} has Rows/Columns {rows}x{cols}")
    if rows * cols * n_slices > MAX_VOXELS:
        raise DicomImportError(f"series {series}: {cols}x{rows}x{n_slices} voxels is beyond the supported size")
    spacing = _floats(first, "PixelSpacing", 2, series, path)
    if np.any(spacing <= 0):
        raise GeometryError(f"series {series}: PixelSpacing {spacing.tolist()} is not positive")
    return _Plane(iop, rows, cols, spacing)


def _slice_position(
    ds: pydicom.Dataset, path: str, plane: _Plane, first_path: str, series: str
) -> npt.NDArray[np.float64]:
    """ImagePositionPatient of one slice, after checking it shares ``plane``."""
    o = _floats(ds, "ImageOrientationPatient", 6, series, path)
    if not np.allclose(o, plane.iop, atol=ORIENTATION_ATOL):
        raise GeometryError(
            f"series {series}: mixed orientations ({path} has {o.tolist()}, "
            f"{first_path} has {plane.iop.tolist()}); split the series or remove stray files."
        )
    if int(ds.get("Rows", 0) or 0) != plane.rows or int(ds.get("Columns", 0) or 0) != plane.cols:
        raise GeometryError(
            f"series {series}: {path} is {ds.get('Columns')}x{ds.get('Rows')}, others {plane.cols}x{plane.rows}"
        )
    if not np.allclose(_floats(ds, "PixelSpacing", 2, series, path), plane.spacing, rtol=1e-4):
        raise GeometryError(f"series {series}: {path} has a different PixelSpacing")
    return _floats(ds, "ImagePositionPatient", 3, series, path)


def _check_slice_steps(along: npt.NDArray[np.float64], recs: Sequence[InstanceRecord], series: str) -> None:
    """Refuse duplicate slices, gaps and non-uniform spacing (``along``: sorted positions
    along the normal, mm)."""
    steps = np.diff(along)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = int(dup[0])
        raise GeometryError(
            f"series {series}: duplicate slice position {along[i]:.3f} mm along the normal "
            f"({recs[i].path} and {recs[i + 1].path}); remove the duplicate."
        )
    med = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - med) > SPACING_RTOL * med)
    if bad.size:
        i = int(bad[0])
        ratio = steps[i] / med
        kind = "missing slice(s)" if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1 else "non-uniform spacing"
        raise GeometryError(
            f"series {series}: {kind}: slice spacing {steps[i]:.3f} mm between "
            f"{recs[i].path.name} and {recs[i + 1].path.name}, expected {med:.3f} mm "
            f"(tolerance {SPACING_RTOL:.0%}). Check the export is complete."
        )


def assemble_ct(records: Sequence[InstanceRecord], *, decode: bool = True) -> CtSeries:
    """Read and assemble one single-frame CT series.

    Args:
        records: the series' instances.
        decode: decode every slice now. With ``False`` the geometry is checked and the
            volume is a NaN placeholder of the right shape (no memory): pass the result to
            :func:`decode_slices` with the slices that are needed (enhanced multi-frame CT
            is always decoded, being one file).

    Raises:
        GeometryError: the slices do not form one regular 3D grid.
        DicomImportError: a file cannot be read or decoded.
    """
    if not records:
        raise DicomImportError("empty CT series")
    series = records[0].series_instance_uid
    _check_uids(records)
    if any(r.number_of_frames > 1 for r in records):
        return _assemble_multiframe(records)
    recs, dropped = _deduplicate(records, series)
    dss = [_read(r) for r in recs]
    plane = _plane_of(dss[0], str(recs[0].path), len(dss), series)
    pos = np.asarray(
        [_slice_position(ds, str(r.path), plane, str(recs[0].path), series) for r, ds in zip(recs, dss, strict=True)]
    )
    along = pos @ plane.normal
    order = np.argsort(along, kind="stable")
    pos, along = pos[order], along[order]
    dss = [dss[i] for i in order]
    recs = [recs[i] for i in order]
    if len(dss) > 1:
        _check_slice_steps(along, recs, series)
        k_vec = _step_along_normal(pos, plane.normal, f"series {series}: slice origins", "slice")
    else:
        k_vec = plane.normal * float(dss[0].get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = plane.row_dir * plane.spacing[1]
    affine[:3, 1] = plane.col_dir * plane.spacing[0]
    affine[:3, 2] = k_vec
    affine[:3, 3] = pos[0]
    for r, ds in zip(recs, dss, strict=True):
        _check_native_length(ds, series, str(r.path))
    placeholder = np.broadcast_to(np.float32(np.nan), (plane.cols, plane.rows, len(dss)))
    ct = CtSeries(
        volume=Volume(array=placeholder, affine=affine),
        datasets=tuple(dss),
        dropped=dropped,
        paths=tuple(str(r.path) for r in recs),
        decoded=frozenset(),
    )
    return decode_slices(ct, range(len(dss))) if decode else ct


def slice_runs(slices: Iterable[int]) -> list[tuple[int, int]]:
    """The runs ``[start, stop)`` of consecutive k indices in ``slices``, in order."""
    runs: list[tuple[int, int]] = []
    for k in sorted({int(k) for k in slices}):
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    return runs


def decode_slices(ct: CtSeries, slices: Iterable[int]) -> CtSeries:
    """``ct`` with the pixels of slices ``slices`` (k indices) decoded to HU.

    Only those slices are allocated: one float32 slab per run of consecutive indices
    (:attr:`CtSeries.slabs`, each a Volume with its own affine); the whole series' volume
    stays a placeholder without memory. When ``slices`` is every slice the result holds
    one whole volume instead (``decoded is None``). The HU range of the decoded voxels is
    computed on the way (:attr:`CtSeries.hu_range`).

    Call it once per series, on the result of ``assemble_ct(..., decode=False)``: the pixel
    data of every slice is released afterwards. A series already decoded is returned as is.

    Raises:
        DicomImportError: a slice cannot be decoded or has the wrong size.
    """
    if ct.decoded is None:
        return ct
    if ct.decoded:
        raise ValueError(
            f"series {ct.series_instance_uid}: decode_slices was already called; its pixel data is released"
        )
    n = ct.volume.shape[2]
    wanted = sorted({int(k) for k in slices})
    if wanted and (wanted[0] < 0 or wanted[-1] >= n):
        raise ValueError(f"slice indices {wanted[0]}..{wanted[-1]} outside 0..{n - 1}")
    slabs: list[Volume] = []
    lo, hi = np.inf, -np.inf
    for start, stop in slice_runs(wanted):
        slab = _decode_run(ct, start, stop)
        slabs.append(slab)
        if slab.array.size:
            lo, hi = min(lo, float(np.min(slab.array))), max(hi, float(np.max(slab.array)))
    for ds in ct.datasets:
        if "PixelData" in ds:
            del ds.PixelData
    whole = len(wanted) == n
    return CtSeries(
        volume=slabs[0] if whole else ct.volume,
        datasets=ct.datasets,
        dropped=ct.dropped,
        paths=ct.paths,
        decoded=None if whole else frozenset(wanted),
        slabs=() if whole else tuple(slabs),
        hu_range=(lo, hi) if wanted else None,
    )


def _decode_run(ct: CtSeries, start: int, stop: int) -> Volume:
    """Slices ``[start, stop)`` of ``ct`` decoded to HU: a Volume whose affine is the
    series' moved ``start`` slices along k."""
    cols, rows, _ = ct.volume.shape
    series = ct.series_instance_uid
    # Slices are filled contiguously in (k, j, i) order; the volume is its (i, j, k) view
    # (Fortran-ordered), which avoids a strided copy of every slice.
    kji = np.empty((stop - start, rows, cols), dtype=np.float32)
    for k in range(start, stop):
        path = ct.paths[k]
        px = _pixels(ct.datasets[k], series, path)
        if px.shape != (rows, cols):
            raise DicomImportError(
                f"series {series}: {path} pixel data has shape {px.shape}, header says {rows}x{cols}"
            )
        kji[k - start] = px
    affine = np.array(ct.volume.affine, dtype=np.float64)
    affine[:3, 3] = ct.volume.index_to_lps(np.array([0.0, 0.0, float(start)]))
    return Volume(array=kji.transpose(2, 1, 0), affine=affine)


def _step_along_normal(
    positions: npt.NDArray[np.float64], normal: npt.NDArray[np.float64], what: str, unit: str
) -> npt.NDArray[np.float64]:
    """The mean step between sorted slice origins (mm, LPS); raises :class:`GeometryError`
    when the origins drift off the slice normal (gantry tilt, shear)."""
    step_vec: npt.NDArray[np.float64] = (positions[-1] - positions[0]) / (len(positions) - 1)
    drift = positions - positions[0] - np.outer(np.arange(len(positions)), step_vec)
    inplane = step_vec - (step_vec @ normal) * normal
    if np.linalg.norm(inplane) > TILT_ATOL_MM or np.abs(drift).max() > TILT_ATOL_MM * 10:
        raise GeometryError(
            f"{what} are not along the slice normal (in-plane shift {np.linalg.norm(inplane):.3f} mm per "
            f"{unit}): gantry tilt or a sheared acquisition, which this software does not resample. "
            "Correct the tilt (e.g. with dcm2niix's gantry tilt correction) first."
        )
    return step_vec


def _decodes(path: Path) -> bool:
    try:
        ds = read_dataset(path)
        return decode_pixels(ds).size == int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
    except DECODE_ERRORS:
        return False


def _deduplicate(
    records: Sequence[InstanceRecord], series: str
) -> tuple[list[InstanceRecord], tuple[tuple[str, str], ...]]:
    """One record per SOPInstanceUID. Identical copies are dropped silently; of differing
    copies, a single one whose pixels decode is kept (the others are reported as dropped);
    two differing valid copies are ambiguous and refuse the series."""
    groups: dict[str, list[InstanceRecord]] = {}
    for r in records:
        groups.setdefault(r.sop_instance_uid, []).append(r)
    kept: list[InstanceRecord] = []
    dropped: list[tuple[str, str]] = []
    for uid, recs in groups.items():
        distinct: dict[bytes, InstanceRecord] = {}
        for r in recs:
            distinct.setdefault(r.path.read_bytes(), r)
        if len(distinct) == 1:
            kept.append(recs[0])
            continue
        valid = [r for r in distinct.values() if _decodes(r.path)]
        if len(valid) != 1:
            paths = ", ".join(str(r.path) for r in distinct.values())
            raise GeometryError(
                f"series {series}: SOPInstanceUID {uid} occurs in {len(distinct)} files with different "
                f"content ({paths}); {'all' if valid else 'none'} of them decode, so the right one "
                "cannot be chosen. Remove the wrong copies."
            )
        kept.append(valid[0])
        dropped += [
            (str(r.path), f"damaged duplicate of SOPInstanceUID {uid} (kept {valid[0].path})")
            for r in distinct.values()
            if r is not valid[0]
        ]
    return kept, tuple(dropped)


def _assemble_multiframe(records: Sequence[InstanceRecord]) -> CtSeries:
    """Enhanced (multi-frame) CT: one instance, geometry from per-frame functional groups."""
    series = records[0].series_instance_uid
    if len(records) != 1:
        raise DicomImportError(
            f"series {series}: {len(records)} multi-frame instances in one series; "
            "pass one enhanced CT instance per series"
        )
    rec = records[0]
    ds = _read(rec)
    try:
        shared = ds.SharedFunctionalGroupsSequence[0]
        per_frame = ds.PerFrameFunctionalGroupsSequence
        iop_src = (
            shared.PlaneOrientationSequence[0]
            if "PlaneOrientationSequence" in shared
            else per_frame[0].PlaneOrientationSequence[0]
        )
        ps_src = (
            shared.PixelMeasuresSequence[0]
            if "PixelMeasuresSequence" in shared
            else per_frame[0].PixelMeasuresSequence[0]
        )
        iop = _floats(iop_src, "ImageOrientationPatient", 6, series, str(rec.path))
        spacing = _floats(ps_src, "PixelSpacing", 2, series, str(rec.path))
        positions = np.asarray(
            [_floats(f.PlanePositionSequence[0], "ImagePositionPatient", 3, series, str(rec.path)) for f in per_frame]
        )
    except (AttributeError, IndexError, KeyError) as e:
        raise GeometryError(
            f"series {series}: enhanced CT {rec.path} lacks plane position/orientation functional groups ({e})"
        ) from e
    _check_native_length(ds, series, str(rec.path))
    try:
        px = decode_pixels(ds)
    except DECODE_ERRORS as e:
        raise DicomImportError(f"series {series}: pixel data of {rec.path} cannot be decoded: {e}") from e
    if px.ndim == 2:
        px = px[None]
    slopes = np.ones(len(per_frame), np.float32)
    intercepts = np.zeros(len(per_frame), np.float32)
    for n, f in enumerate(per_frame):
        src = f if "PixelValueTransformationSequence" in f else shared
        if "PixelValueTransformationSequence" in src:
            t = src.PixelValueTransformationSequence[0]
            slopes[n] = float(t.get("RescaleSlope", 1) or 1)
            intercepts[n] = float(t.get("RescaleIntercept", 0) or 0)
        else:
            slopes[n] = float(ds.get("RescaleSlope", 1) or 1)
            intercepts[n] = float(ds.get("RescaleIntercept", 0) or 0)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    steps = np.diff(along)
    if steps.size and (
        np.any(steps < 1e-3) or np.any(np.abs(steps - np.median(steps)) > SPACING_RTOL * np.median(steps))
    ):
        raise GeometryError(f"series {series}: frames of {rec.path} are duplicated, missing or unevenly spaced")
    if len(positions) > 1:
        _step_along_normal(positions, normal, f"series {series}: frame origins of {rec.path}", "frame")
    hu = px[order].astype(np.float32) * slopes[order, None, None] + intercepts[order, None, None]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[1]
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1) if len(positions) > 1 else normal
    affine[:3, 3] = positions[0]
    del ds.PixelData
    hu_range = (float(hu.min()), float(hu.max())) if hu.size else None
    return CtSeries(volume=Volume(array=hu.transpose(2, 1, 0), affine=affine), datasets=(ds,), hu_range=hu_range)
