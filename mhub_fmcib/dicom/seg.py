"""Read DICOM SEG objects (with highdicom) and place their segments on a CT grid."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import SegmentationError
from ..records import CodeTuple
from .ct import MAX_VOXELS, CtSeries
from .read import invalid_dicom_error, read_dataset, transfer_syntax
from .uids import plausible_uid

if TYPE_CHECKING:  # highdicom (~1 s to import) and pydicom are loaded only when a SEG is read
    import highdicom as hd
    import pydicom


@dataclass(frozen=True)
class SegmentInfo:
    """Description of one segment of a SEG."""

    number: int
    label: str
    property_type: CodeTuple | None
    anatomic_region: CodeTuple | None


def _code(item: object) -> CodeTuple | None:
    if item is None:
        return None
    try:
        return (str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))  # type: ignore[attr-defined]
    except AttributeError:
        return None


@dataclass(frozen=True, eq=False)
class SegObject:
    """A SEG read with highdicom, with its segment descriptions."""

    path: Path
    seg: hd.seg.Segmentation
    segments: tuple[SegmentInfo, ...]
    #: SOPInstanceUIDs the frames name as their source images (empty: the SEG names none)
    frame_sources: frozenset[str] = frozenset()
    #: segment number -> SOPInstanceUIDs of the source images its frames reference
    #: (``None``: some frame references none; absent: unknown). Read only those slices.
    source_uids: Mapping[int, frozenset[str] | None] = field(default_factory=dict)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.seg.SOPInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str | None:
        v = self.seg.get("FrameOfReferenceUID")
        return str(v) if v else None


def read_seg(path: Path) -> SegObject:
    """Read a SEG file with highdicom.

    Raises:
        SegmentationError: the file is not a readable SEG.
    """
    errors = (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        struct.error,
        invalid_dicom_error(),
    )
    try:
        # the header is checked before highdicom builds its per-frame tables, whose size
        # follows NumberOfFrames (2**31 claimed frames would take tens of GB)
        header = read_dataset(Path(path), stop_before_pixels=True)
        _check_pixel_data_size(header, Path(path), Path(path).stat().st_size)
        import highdicom as hd  # lazily: see the TYPE_CHECKING import

        seg = hd.seg.Segmentation.from_dataset(read_dataset(Path(path)), copy=False)
    except errors as e:
        raise SegmentationError(f"SEG {path} cannot be read: {type(e).__name__}: {e}") from e
    _check_pixel_data_size(seg, Path(path), None)
    if not plausible_uid(str(seg.SOPInstanceUID)):
        raise SegmentationError(
            f"SEG {path} has SOPInstanceUID {str(seg.SOPInstanceUID)!r}, which is not a DICOM UID "
            "(digits and dots, at most 64 characters); fix the export that produced it."
        )
    infos = []
    for item in seg.get("SegmentSequence", []):
        regions = item.get("AnatomicRegionSequence")
        infos.append(
            SegmentInfo(
                number=int(item.SegmentNumber),
                label=str(item.get("SegmentLabel", "") or f"Segment {item.SegmentNumber}"),
                property_type=_code(item.SegmentedPropertyTypeCodeSequence[0])
                if "SegmentedPropertyTypeCodeSequence" in item
                else None,
                anatomic_region=_code(regions[0]) if regions else None,
            )
        )
    frame_sources, source_uids = _frame_references(seg)
    return SegObject(
        path=Path(path),
        seg=seg,
        segments=tuple(infos),
        frame_sources=frame_sources,
        source_uids=source_uids,
    )


def _derivation_sources(group: pydicom.Dataset) -> set[str]:
    """ReferencedSOPInstanceUIDs of a functional group's DerivationImageSequence ›
    SourceImageSequence (an empty value included: it is a reference, just a broken one)."""
    return {
        str(src.ReferencedSOPInstanceUID)
        for der in group.get("DerivationImageSequence", [])
        for src in der.get("SourceImageSequence", [])
        if "ReferencedSOPInstanceUID" in src
    }


def _frame_references(seg: hd.seg.Segmentation) -> tuple[frozenset[str], dict[int, frozenset[str] | None]]:
    """``SegObject``'s ``(frame_sources, source_uids)``, in one pass over the frames.

    ``frame_sources``: the (non-empty) SOPInstanceUIDs the frames were derived from, per-frame
    and shared functional groups. ``source_uids``: segment number -> the SOPInstanceUIDs its
    frames are derived from (per-frame groups); ``None`` for a segment with a frame that
    references no image."""
    every: set[str] = set()
    for shared in seg.get("SharedFunctionalGroupsSequence", []):
        every |= _derivation_sources(shared)
    found: dict[int, set[str]] = {}
    unknown: set[int] = set()
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        refs = _derivation_sources(frame)
        every |= refs
        try:
            number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        except (AttributeError, IndexError, TypeError, ValueError):
            continue
        if not refs:
            unknown.add(number)
        found.setdefault(number, set()).update(refs)
    per_segment = {n: None if n in unknown else frozenset(u) for n, u in found.items()}
    return frozenset(u for u in every if u), per_segment


def foreign_frames_error(seg: SegObject, ct: CtSeries) -> SegmentationError | None:
    """The error for a SEG whose frames name source images of which none is an instance of
    ``ct`` (it was made on another series and placed on ``ct`` by Frame of Reference): what
    it references, whose instances those are (from its ReferencedSeriesSequence) and the
    fix. ``None`` when the SEG names no source image or some of ``ct``'s."""
    refs = seg.frame_sources
    if not refs or refs & set(ct.sop_instance_uids):
        return None
    owner: dict[str, str] = {}
    for item in seg.seg.get("ReferencedSeriesSequence", []):
        for inst in item.get("ReferencedInstanceSequence", []):
            owner[str(inst.get("ReferencedSOPInstanceUID", ""))] = str(item.get("SeriesInstanceUID", ""))
    counts: dict[str, int] = {}
    for uid in refs:
        key = owner.get(uid, "")
        counts[key] = counts.get(key, 0) + 1
    whose = [f"{n} to series {series}" for series, n in sorted(counts.items()) if series]
    if counts.get(""):
        whose.append(f"{counts['']} to no series its ReferencedSeriesSequence lists (unknown)")
    return SegmentationError(
        f"SEG {seg.path}: its frames reference {len(refs)} SOP Instance UID(s), none of which is an instance of "
        f"CT series {ct.series_instance_uid} ({len(ct.datasets)} instance(s)), the series it was placed on; they "
        f"belong {', '.join(whose)} (as the SEG lists them). The SEG was made on another series (another "
        "reconstruction, or a copy with new UIDs): add the series it was made on to the input, or re-export the "
        "segmentation on this series."
    )


def _check_pixel_data_size(seg: pydicom.Dataset, path: Path, file_size: int | None) -> None:
    """Refuse a SEG whose header claims more frames or pixels than it holds, before any
    array of the claimed size is made (a damaged header must not allocate gigabytes).

    ``file_size``: bytes of the file when ``seg`` was read without its pixel data (the
    claimed size is then compared with the file); ``None`` when PixelData is present.
    """
    try:
        rows, cols = int(seg.get("Rows", 0) or 0), int(seg.get("Columns", 0) or 0)
        frames = int(seg.get("NumberOfFrames", 1) or 1)
        bits = int(seg.get("BitsAllocated", 1) or 1)
    except (TypeError, ValueError) as e:
        raise SegmentationError(f"SEG {path} has an unreadable Rows/Columns/NumberOfFrames ({e})") from e
    if rows < 1 or cols < 1 or frames < 1 or rows * cols * frames > MAX_VOXELS:
        raise SegmentationError(
            f"SEG {path} claims {frames} frame(s) of {cols}x{rows} pixels, which is empty or beyond the "
            "supported size; the file is damaged. Re-export the segmentation."
        )
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != frames:
        raise SegmentationError(
            f"SEG {path} claims {frames} frame(s) but describes {len(per_frame)} in its "
            "PerFrameFunctionalGroupsSequence; the file is damaged. Re-export the segmentation."
        )
    data = seg.get("PixelData")
    if data is None and file_size is None:
        raise SegmentationError(f"SEG {path} has no PixelData; re-export the segmentation.")
    held = file_size if file_size is not None else len(data)
    syntax = transfer_syntax(seg)
    if syntax and not syntax.is_encapsulated:
        expected = (rows * cols * frames * bits + 7) // 8
        if held < expected:
            raise SegmentationError(
                f"SEG {path} claims {frames} frame(s) of {cols}x{rows} pixels at {bits} bit(s) "
                f"({expected} bytes) but holds {held} bytes{'' if file_size is None else ' in all'}; the file is "
                "truncated or its header is wrong. Re-export the segmentation."
            )


def select_segments(seg: SegObject, wanted: Sequence[str]) -> list[SegmentInfo]:
    """The segments to measure: all, or those named by number or label in ``wanted``."""
    if not wanted:
        return list(seg.segments)
    keep = [s for s in seg.segments if str(s.number) in wanted or s.label in wanted]
    return keep


def segment_mask_on_ct(seg: SegObject, number: int, ct: CtSeries) -> npt.NDArray[np.bool_]:
    """Segment ``number`` of ``seg`` as a boolean mask on the CT grid, shape (I, J, K)
    (:func:`segment_voxels_on_ct` on a whole-grid array).

    Raises:
        SegmentationError: as :func:`segment_voxels_on_ct`.
    """
    mask = np.zeros(ct.volume.shape, dtype=bool)
    mask[tuple(segment_voxels_on_ct(seg, number, ct).T)] = True
    return mask


def segment_voxels_on_ct(seg: SegObject, number: int, ct: CtSeries) -> npt.NDArray[np.int64]:
    """The CT voxels of segment ``number`` of ``seg``: (N, 3) distinct (i, j, k) indices,
    ordered as ``np.argwhere`` orders them on the (I, J, K) mask.

    Frames are matched to CT slices through their source-image references, reading only the
    slices the segment's frames reference (memory: those slices, not the whole CT grid); a
    SEG without them is placed by geometry (its grid must coincide with the CT's, up to
    axis order).

    Raises:
        SegmentationError: the SEG's Frame of Reference differs from the CT's, its frames
            reference instances of another series only (:func:`foreign_frames_error`), or
            they do not fall on the CT's voxels.
    """
    ct_for = ct.frame_of_reference_uid
    if seg.frame_of_reference_uid and ct_for and seg.frame_of_reference_uid != ct_for:
        raise SegmentationError(
            f"SEG {seg.path} (FrameOfReferenceUID {seg.frame_of_reference_uid}) is not in the "
            f"Frame of Reference of CT series {ct.series_instance_uid} ({ct_for}); its masks "
            "cannot be placed on that CT."
        )
    foreign = foreign_frames_error(seg, ct)
    if foreign is not None:  # else every frame would be missed: an "empty" segment
        raise foreign
    uids = list(ct.sop_instance_uids)
    refs = seg.source_uids.get(number)
    ks = [k for k, uid in enumerate(uids) if uid in refs] if refs else []
    if not ks:  # frames without references, or referencing none of this series: as before, all
        ks = list(range(len(uids)))
    try:
        px = seg.seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uids[k] for k in ks],
            segment_numbers=[number],
            assert_missing_frames_are_empty=True,
            combine_segments=False,
        )
    except (ValueError, KeyError, AttributeError, IndexError, RuntimeError):
        return _voxels_by_geometry(seg, number, ct)
    # (slices, rows, cols, 1): (s, r, c) -> CT (i = c, j = r, k = ks[s])
    src = np.argwhere(np.asarray(px[..., 0]) > 0)
    idx = np.column_stack([src[:, 2], src[:, 1], np.asarray(ks, dtype=np.int64)[src[:, 0]]]).astype(np.int64)
    return _distinct_sorted(idx, ct.volume.shape)


def _distinct_sorted(idx: npt.NDArray[np.int64], shape: tuple[int, int, int]) -> npt.NDArray[np.int64]:
    """(N, 3) indices inside ``shape``, each once, in C order of the (I, J, K) grid."""
    n = np.asarray(shape, dtype=np.int64)
    idx = idx[np.all((idx >= 0) & (idx < n), axis=1)]
    flat = np.unique(np.ravel_multi_index(tuple(idx.T), shape))
    return np.stack(np.unravel_index(flat, shape), axis=1).astype(np.int64)


def _voxels_by_geometry(seg: SegObject, number: int, ct: CtSeries) -> npt.NDArray[np.int64]:
    try:
        vol = seg.seg.get_volume(segment_numbers=[number], combine_segments=False)
    except (ValueError, KeyError, AttributeError, IndexError, RuntimeError, sqlite3.Error) as e:
        # sqlite3.Error: highdicom's frame lookup table after a failed first attempt
        raise SegmentationError(
            f"SEG {seg.path} segment {number}: frames reference no CT instance of series "
            f"{ct.series_instance_uid} and do not form a regular volume ({e})"
        ) from e
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    # seg index (slice, row, col) -> CT index (i, j, k)
    xform = np.linalg.inv(ct.volume.affine) @ np.asarray(vol.affine)
    rot = xform[:3, :3]
    if not (
        np.allclose(np.abs(rot).sum(0), 1, atol=1e-3)
        and np.allclose(rot, np.round(rot), atol=1e-3)
        and np.allclose(xform[:3, 3], np.round(xform[:3, 3]), atol=1e-2)
    ):
        raise SegmentationError(
            f"SEG {seg.path} segment {number}: its pixel grid does not coincide with CT series "
            f"{ct.series_instance_uid} (different spacing, orientation or offset); resample it "
            "onto the CT grid first."
        )
    idx = np.argwhere(arr > 0)
    ct_idx = np.rint(idx @ rot.T + xform[:3, 3]).astype(np.int64)
    return _distinct_sorted(ct_idx, ct.volume.shape)
