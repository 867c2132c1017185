"""The "patch region" SEG: per lesion, the part of the CT the encoder read, on the CT grid.

The encoder reads the 50 mm cube around the seed; where the cube leaves the image, the patch
is zero padding (:attr:`Patch.valid` says which voxels came from the image). A CT voxel
belongs to a lesion's segment when its centre lies inside the box spanned by the outer
voxel edges of the patch's *valid* voxels (:meth:`Patch.read_corners_lps`), half-open
``[min, max)`` per LPS axis (the box is axis-aligned in LPS): exactly the CT voxels inside
the region the encoder read, never padding. A lesion whose region holds no CT voxel centre
is skipped and its reason recorded.

Each segment carries the lesion's label (:mod:`.labels`) as Segment Label and Tracking ID,
a Tracking UID derived from the lesion id, and its own Recommended Display CIELab Value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.sr.codedict import codes

from ..provenance import Provenance
from ..records import LesionResult, LesionStatus, Volume
from .labels import LesionLabel, lesion_labels
from .layout import SEG_FILE_NAME, ExportError, atomic_write_dataset, derive_uid, dicom_output_dir, seg_file_name
from .sr import ALGORITHM_NAME, DEMO_PARAMETER, MANUFACTURER, MODEL_NAME, header_copy, series_identity

SEG_SERIES_NUMBER = 9502
SEG_SERIES_DESCRIPTION = "FMCIB patch regions - research use only"
DEMO_SEG_SERIES_DESCRIPTION = "DEMONSTRATION random weights - FMCIB patch regions"
#: Segment category / type: a spatial region, not an anatomical or abnormal structure.
SEGMENT_CATEGORY = codes.SCT.SpatialAndRelationalConcept
SEGMENT_TYPE = codes.DCM.SelectedRegion
#: Tolerance (voxels) when matching CT instances to the volume's slices.
_SLICE_TOL = 1e-3
#: Largest (frames x rows x columns x segments) uint8 stack built for highdicom when cubes
#: overlap (bytes; highdicom may hold a copy of it while encoding): 500 overlapping cubes on
#: 48 slices of 512 x 512 would need 6.3 GB, so the lesions are split over several SEGs.
MAX_STACK_BYTES = 256 * 2**20


class StackTooLargeError(ExportError):
    """The overlapping cubes of one SEG need a frame stack above :data:`MAX_STACK_BYTES`
    (:func:`build_patch_region_segs` then splits the lesions over several SEGs)."""


@dataclass(frozen=True, eq=False)
class PatchRegionSeg:
    """Result of :func:`build_patch_region_seg`, or one part of :func:`iter_patch_region_segs`.

    Attributes:
        dataset: the SEG, or ``None`` when no lesion had a cube on the CT grid.
        segments: (lesion_id, segment number) of each lesion in the SEG.
        skipped: (lesion_id, reason) of each OK lesion without a segment.
        number: this SEG's part number (1-based) among the series' ``parts`` SEGs.
        parts: how many patch-region SEGs the series has.
    """

    dataset: hd.seg.Segmentation | None
    segments: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, str], ...]
    number: int = 1
    parts: int = 1

    @property
    def file_name(self) -> str:
        """:func:`~.layout.seg_file_name` of this part."""
        return seg_file_name(self.number, self.parts)


@dataclass(frozen=True, eq=False)
class CubeBox:
    """A lesion's read region on the CT grid, kept as the sub-block of voxels it can reach.

    Attributes:
        start: (i, j, k) index of the block's first voxel in the volume.
        mask: (ni, nj, nk) bool, which of the block's voxels lie in the region; may be empty
            (shape with a zero) when the region misses the volume.
    """

    start: tuple[int, int, int]
    mask: npt.NDArray[np.bool_]

    def any(self) -> bool:
        """Whether the region holds a CT voxel centre."""
        return bool(self.mask.any())

    def full(self, shape: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
        """The (I, J, K) mask of the whole volume of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        (i, j, k), (ni, nj, nk) = self.start, self.mask.shape
        out[i : i + ni, j : j + nj, k : k + nk] = self.mask
        return out


def cube_box(volume: Volume, corners_lps: npt.ArrayLike) -> CubeBox:
    """The :class:`CubeBox` of CT voxels whose centres lie in the LPS box of the corners,
    half-open ``[min, max)`` per LPS axis.

    Args:
        volume: the CT grid (any orientation; geometry only).
        corners_lps: (N, 3) LPS mm points; their axis-aligned bounding box is the cube.
    """
    corners = np.asarray(corners_lps, dtype=np.float64).reshape(-1, 3)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    box = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = volume.lps_to_index(box)
    shape = np.asarray(volume.shape)
    start = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 1, 0, shape)
    stop = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 2, 0, shape)
    first = (int(start[0]), int(start[1]), int(start[2]))
    if np.any(stop <= start):
        return CubeBox(first, np.zeros((0, 0, 0), dtype=bool))
    grids = np.meshgrid(*(np.arange(a, b) for a, b in zip(start, stop, strict=True)), indexing="ij")
    idx = np.stack([g.ravel() for g in grids], axis=1)
    lps = volume.index_to_lps(idx)
    inside = np.all((lps >= lo) & (lps < hi), axis=1)
    return CubeBox(first, inside.reshape(grids[0].shape))


def cube_mask(volume: Volume, corners_lps: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Boolean (I, J, K) mask of CT voxels whose centres lie in the LPS box of the corners
    (:func:`cube_box` on the whole volume).

    Args:
        volume: the CT grid (any orientation).
        corners_lps: (N, 3) LPS mm points; their axis-aligned bounding box is the cube.
    """
    return cube_box(volume, corners_lps).full(volume.shape)


def _slice_order(ct_datasets: Sequence[pydicom.Dataset], volume: Volume) -> list[int]:
    """For each CT dataset, the k index of the volume slice it is; checks the geometry."""
    out: list[int] = []
    for ds in ct_datasets:
        try:
            ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
            rows, cols = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ExportError(
                f"CT instance {ds.get('SOPInstanceUID', '?')} lacks ImagePositionPatient, Rows "
                f"or Columns ({exc}); the patch SEG needs single-frame CT images"
            ) from exc
        ijk = volume.lps_to_index(ipp)
        k = round(float(ijk[2]))
        if (
            abs(ijk[0]) > _SLICE_TOL
            or abs(ijk[1]) > _SLICE_TOL
            or abs(ijk[2] - k) > _SLICE_TOL
            or not 0 <= k < volume.shape[2]
            or (cols, rows) != volume.shape[:2]
        ):
            raise ExportError(
                f"CT instance {ds.get('SOPInstanceUID', '?')} at {ipp.tolist()} "
                f"({rows}x{cols}) is not a slice of the given volume (index {ijk.tolist()}); "
                "pass the volume read from these very datasets"
            )
        out.append(k)
    if len(set(out)) != len(out):
        raise ExportError("two CT instances map to the same slice of the volume")
    return out


def build_patch_region_seg(
    ct_datasets: Sequence[pydicom.Dataset],
    ct_volume: Volume,
    results: Sequence[LesionResult],
    provenance: Provenance,
    stacked: bool = False,
    demonstration: bool = False,
) -> PatchRegionSeg:
    """One BINARY SEG whose segment n is the n-th OK lesion's read region on the CT grid.

    Args:
        ct_datasets: the CT series' instances (headers suffice), each a slice of ``ct_volume``.
        ct_volume: the CT as read by the pipeline (geometry only is used).
        results: lesion results; OK ones with a ``patch`` get a segment, in the given order.
        provenance: for the algorithm identification and software versions.
        stacked: hand highdicom one binary frame stack per segment even when no cubes
            overlap (the tests compare it with the label map used then; same SEG).
        demonstration: random-initialised weights: the series description says so.

    Memory: each lesion's region is kept as its small block of the CT grid; the frames are
    one (slices, rows, columns) label map, or where cubes overlap one (slices, rows,
    columns, segments) uint8 array, for the CT slices a cube reaches only; that array is
    refused above :data:`MAX_STACK_BYTES` (:class:`StackTooLargeError`;
    :func:`build_patch_region_segs` splits the lesions over several SEGs instead).
    """
    p = _Planned.of(ct_datasets, ct_volume, results, provenance)
    if not p.boxes:
        return PatchRegionSeg(None, (), p.skipped)
    seg = _build_part(p.series, p.boxes, p.segments, p.labels, (p.key, 1, 1), provenance, stacked, demonstration)
    return PatchRegionSeg(seg, p.segments, p.skipped)


def iter_patch_region_segs(
    ct_datasets: Sequence[pydicom.Dataset],
    ct_volume: Volume,
    results: Sequence[LesionResult],
    provenance: Provenance,
    demonstration: bool = False,
    max_stack_bytes: int = MAX_STACK_BYTES,
) -> Iterator[PatchRegionSeg]:
    """The patch-region SEG(s) of one CT series, built one at a time: every OK lesion with a
    cube in exactly one.

    One SEG (:func:`build_patch_region_seg`) unless its lesions' cubes overlap so much that
    highdicom's frame stack would exceed ``max_stack_bytes``; then the lesions are split, in
    their order, into as many SEGs as needed, each within the bound. The parts form one SEG
    series (same Series Instance UID, InstanceNumber 1, 2, ...), each with its own lesions
    as segments 1..n (Tracking UIDs as in a single SEG); a single SEG keeps its UIDs. A
    caller that writes each part and drops it holds one part in memory (each holds its
    encoded frames: ~30 MB for 80 segments of 512 x 512 frames), not all.

    Raises:
        ExportError: as :func:`build_patch_region_seg`, or one lesion alone exceeds the bound.
    """
    p = _Planned.of(ct_datasets, ct_volume, results, provenance)
    if not p.boxes:
        yield PatchRegionSeg(None, (), p.skipped)
        return
    try:
        whole = (p.key, 1, 1)
        seg = _build_part(
            p.series, p.boxes, p.segments, p.labels, whole, provenance, False, demonstration, max_stack_bytes
        )
    except StackTooLargeError:
        chunks = _chunks(p.boxes, p.series, max_stack_bytes)
    else:
        yield PatchRegionSeg(seg, p.segments, p.skipped)
        return
    for n, chunk in enumerate(chunks, start=1):
        part_segments = tuple((p.segments[i][0], number) for number, i in enumerate(chunk, start=1))
        seg = _build_part(
            p.series, [p.boxes[i] for i in chunk], part_segments, p.labels, (p.key, n, len(chunks)),
            provenance, True, demonstration, max_stack_bytes,
        )  # fmt: skip
        yield PatchRegionSeg(seg, part_segments, p.skipped if n == 1 else (), n, len(chunks))
        del seg  # not held while the next part is built


def build_patch_region_segs(
    ct_datasets: Sequence[pydicom.Dataset],
    ct_volume: Volume,
    results: Sequence[LesionResult],
    provenance: Provenance,
    demonstration: bool = False,
    max_stack_bytes: int = MAX_STACK_BYTES,
) -> tuple[PatchRegionSeg, ...]:
    """Every SEG of :func:`iter_patch_region_segs` (same arguments), all in memory; the
    exporter writes them one at a time instead."""
    return tuple(iter_patch_region_segs(ct_datasets, ct_volume, results, provenance, demonstration, max_stack_bytes))


@dataclass(frozen=True, eq=False)
class _SeriesGrid:
    """The CT series a patch-region SEG is built on: its instances, grid and slice order."""

    datasets: Sequence[pydicom.Dataset]
    volume: Volume
    study_uid: str
    series_uid: str
    order: list[int]

    @classmethod
    def of(cls, ct_datasets: Sequence[pydicom.Dataset], ct_volume: Volume) -> _SeriesGrid:
        study_uid, series_uid, _for_uid = series_identity(ct_datasets)
        return cls(ct_datasets, ct_volume, study_uid, series_uid, _slice_order(ct_datasets, ct_volume))


@dataclass(frozen=True, eq=False)
class _Planned:
    """What a series' patch-region SEG(s) hold: the OK lesions' boxes, their (lesion_id,
    segment number) in one SEG, the skipped lesions, the UID key and the labels."""

    series: _SeriesGrid
    boxes: list[CubeBox]
    segments: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    labels: Mapping[str, LesionLabel]

    @classmethod
    def of(
        cls,
        ct_datasets: Sequence[pydicom.Dataset],
        ct_volume: Volume,
        results: Sequence[LesionResult],
        provenance: Provenance,
    ) -> _Planned:
        series = _SeriesGrid.of(ct_datasets, ct_volume)
        ok = [r for r in results if r.status is LesionStatus.OK]
        boxes, segments, skipped = _lesion_boxes(ok, ct_volume)
        key = _uid_key(series.series_uid, ok, provenance)
        return cls(series, boxes, tuple(segments), tuple(skipped), key, lesion_labels(results))


def _build_part(
    series: _SeriesGrid,
    boxes: Sequence[CubeBox],
    segments: Sequence[tuple[str, int]],
    labels: Mapping[str, LesionLabel],
    part: tuple[Sequence[str], int, int],
    provenance: Provenance,
    stacked: bool,
    demonstration: bool,
    max_stack_bytes: int = MAX_STACK_BYTES,
) -> hd.seg.Segmentation:
    """The SEG of ``boxes`` (segments numbered as ``segments``), part ``part[1]`` of
    ``part[2]`` of the series' patch-region SEGs, UIDs derived from ``part[0]``."""
    descriptions = _segment_descriptions(segments, labels, series.series_uid, provenance, demonstration)
    # (I, J, K, S) -> (frames, rows = J, columns = I, S) in the order of ct_datasets, for the
    # CT slices a cube reaches only: the SEG is derived from (and references) those images,
    # and highdicom need not scan the slices no cube reaches.
    keep = _source_positions(boxes, series.order)
    slices = [series.order[d] for d in keep]
    pixels = _frames(boxes, slices, series.volume.shape, stacked, series.series_uid, max_stack_bytes)
    sources = [header_copy(series.datasets[keep[0]]), *(series.datasets[d] for d in keep[1:])]
    seg = _segmentation(sources, pixels, descriptions, part, provenance, demonstration)
    if str(seg.StudyInstanceUID) != series.study_uid:
        raise ExportError("internal error: the SEG is not in the CT's study")
    return seg


def _chunks(boxes: Sequence[CubeBox], series: _SeriesGrid, max_stack_bytes: int) -> list[list[int]]:
    """Consecutive runs of box indices whose (slices x rows x columns x boxes) uint8 stack
    stays within ``max_stack_bytes`` (slices: those any box of the run reaches)."""
    shape = series.volume.shape
    frame_bytes = shape[0] * shape[1]
    chunks: list[list[int]] = []
    current: list[int] = []
    reached: set[int] = set()
    for n, box in enumerate(boxes):
        ks = set((np.flatnonzero(box.mask.any(axis=(0, 1))) + box.start[2]).tolist())
        if len(ks) * frame_bytes > max_stack_bytes:
            raise ExportError(
                f"series {series.series_uid}: one lesion's cube alone needs {len(ks)} frames of "
                f"{shape[0]}x{shape[1]} pixels, more than the {max_stack_bytes / 2**30:.1f} GiB bound; "
                "run with --no-seg"
            )
        if current and (len(current) + 1) * len(reached | ks) * frame_bytes > max_stack_bytes:
            chunks.append(current)
            current, reached = [], set()
        current.append(n)
        reached |= ks
    chunks.append(current)
    return chunks


def _lesion_boxes(
    ok: Sequence[LesionResult], ct_volume: Volume
) -> tuple[list[CubeBox], list[tuple[str, int]], list[tuple[str, str]]]:
    """Per OK lesion its cube's :class:`CubeBox`, its (lesion_id, segment number), or why it
    has no segment."""
    boxes: list[CubeBox] = []
    segments: list[tuple[str, int]] = []
    skipped: list[tuple[str, str]] = []
    for r in ok:
        if r.patch is None:
            skipped.append((r.lesion.lesion_id, "no patch was kept for this lesion"))
            continue
        box = cube_box(ct_volume, r.patch.read_corners_lps())
        if not box.any():
            skipped.append((r.lesion.lesion_id, "the region the encoder read contains no CT voxel centre"))
            continue
        boxes.append(box)
        segments.append((r.lesion.lesion_id, len(boxes)))
    return boxes, segments, skipped


def _segment_descriptions(
    segments: Sequence[tuple[str, int]],
    labels: Mapping[str, LesionLabel],
    series_uid: str,
    provenance: Provenance,
    demonstration: bool,
) -> list[hd.seg.SegmentDescription]:
    """The Segment Sequence items of the lesions' segments: label, tracking id and colour
    of each lesion (:mod:`.labels`)."""
    parameters = {"weights_sha256": provenance.weights_sha256}
    if demonstration:
        parameters["demonstration"] = DEMO_PARAMETER.split("=", 1)[1]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=codes.cid7162.ArtificialIntelligence,
        version=provenance.package_version,
        parameters=parameters,
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=labels[lesion_id].text,
            segmented_property_category=SEGMENT_CATEGORY,
            segmented_property_type=SEGMENT_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=derive_uid("patch-segment", series_uid, lesion_id),
            tracking_id=labels[lesion_id].text,
            display_color=labels[lesion_id].cielab(),
        )
        for lesion_id, number in segments
    ]


def _source_positions(boxes: Sequence[CubeBox], order: Sequence[int]) -> list[int]:
    """Positions in the CT datasets of the slices (k = ``order[d]``) a box's region reaches."""
    reached: set[int] = set()
    for box in boxes:
        reached.update((np.flatnonzero(box.mask.any(axis=(0, 1))) + box.start[2]).tolist())
    return [d for d, k in enumerate(order) if k in reached]


def _uid_key(series_uid: str, ok: Sequence[LesionResult], provenance: Provenance) -> tuple[str, ...]:
    """What the SEG's UIDs are derived from (the same input gives the same UIDs)."""
    return (
        series_uid,
        provenance.weights_sha256,
        provenance.package_version,
        *(f"{r.lesion.lesion_id}@{r.lesion.seed.x!r},{r.lesion.seed.y!r},{r.lesion.seed.z!r}" for r in ok),
    )


def _segmentation(
    sources: Sequence[pydicom.Dataset],
    pixels: npt.NDArray[np.generic],
    descriptions: Sequence[hd.seg.SegmentDescription],
    part: tuple[Sequence[str], int, int],
    provenance: Provenance,
    demonstration: bool,
) -> hd.seg.Segmentation:
    """The BINARY SEG of ``pixels`` on ``sources``, with this package's series attributes;
    ``part``: (UID key, part number, number of parts) — one series for all parts, a single
    SEG's instance UID unchanged by the split."""
    key, number, parts = part
    instance_key = (*key, f"part {number} of {parts}") if parts > 1 else tuple(key)
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=list(descriptions),
        series_instance_uid=derive_uid("seg-series", *key),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=derive_uid("seg-instance", *instance_key),
        instance_number=number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=provenance.package_version,
        device_serial_number="0",
        content_description="CT regions read by the FMCIB encoder (50 mm cubes in the CT)",
        content_label="FMCIB_PATCHES",
        series_description=DEMO_SEG_SERIES_DESCRIPTION if demonstration else SEG_SERIES_DESCRIPTION,
        omit_empty_frames=True,
    )


#: One frame's part of a box: (frame index, row slice, column slice, (rows, columns) mask).
_Plane = tuple[int, slice, slice, npt.NDArray[np.bool_]]


def _frames(
    boxes: Sequence[CubeBox],
    slices: Sequence[int],
    shape: tuple[int, int, int],
    stacked: bool,
    series_uid: str,
    max_stack_bytes: int = MAX_STACK_BYTES,
) -> npt.NDArray[np.generic]:
    """highdicom's pixel array for ``boxes`` on the CT slices ``slices`` (k, in the order of
    the source images; every slice a box reaches) of a volume of ``shape`` (I, J, K).

    Returns a (frames, rows = J, columns = I) label map of segment numbers when no two cubes
    share a voxel, else (or with ``stacked``) a (frames, rows, columns, segments) binary
    uint8 stack. Both give the same BINARY SEG. The stack is a view of a (segments, frames,
    rows, columns) array: each segment's frame that highdicom takes from it is contiguous
    and already of its dtype (no per-frame cast or gather), and a box writes only its own
    rows of its own frames, which lie close together (few memory pages touched).

    Raises:
        StackTooLargeError: the stack would exceed ``max_stack_bytes``.
    """
    position = np.full(shape[2], -1, dtype=np.intp)
    position[np.asarray(slices, dtype=np.intp)] = np.arange(len(slices))
    planes = [_frame_planes(box, position) for box in boxes]
    if not stacked and len(boxes) < 2**16:
        label = np.zeros((len(slices), shape[1], shape[0]), dtype=np.uint8 if len(boxes) < 2**8 else np.uint16)
        if _fill_label_map(label, planes):
            return label
    need = len(boxes) * len(slices) * shape[1] * shape[0]
    if need > max_stack_bytes:
        raise StackTooLargeError(
            f"series {series_uid}: the 50 mm cubes of {len(boxes)} lesions overlap, so the patch-region SEG "
            f"needs one frame per lesion and CT slice: {len(slices)} slices x {len(boxes)} lesions of "
            f"{shape[0]}x{shape[1]} pixels, {need / 2**30:.1f} GiB in memory (limit "
            f"{max_stack_bytes / 2**30:.1f} GiB)."
        )
    stack = np.zeros((len(boxes), len(slices), shape[1], shape[0]), dtype=np.uint8)
    for s, box_planes in enumerate(planes):
        for frame, rows, cols, plane in box_planes:
            stack[s, frame, rows, cols] = plane
    return stack.transpose(1, 2, 3, 0)


def _fill_label_map(label: npt.NDArray[np.integer], planes: Sequence[Sequence[_Plane]]) -> bool:
    """Write segment number n + 1 where ``planes[n]`` (one box's planes) is set; ``False``
    (``label`` then partly written) as soon as two boxes share a voxel."""
    for number, box_planes in enumerate(planes, start=1):
        for frame, rows, cols, plane in box_planes:
            region = label[frame, rows, cols]  # a view
            if np.any(region[plane]):
                return False
            region[plane] = number
    return True


def _frame_planes(box: CubeBox, position: npt.NDArray[np.intp]) -> list[_Plane]:
    """The non-empty planes of ``box`` as frame parts; ``position[k]``: the frame of CT
    slice k (every slice the box's region reaches has one)."""
    (i, j, k), (ni, nj, nk) = box.start, box.mask.shape
    rows, cols = slice(j, j + nj), slice(i, i + ni)
    out: list[_Plane] = []
    for dk in range(nk):
        plane = box.mask[:, :, dk].T
        if not plane.any():
            continue
        frame = int(position[k + dk])
        if frame < 0:
            raise ExportError("internal error: a cube reaches a CT slice that has no SEG frame")
        out.append((frame, rows, cols, plane))
    return out


def write_seg(seg: pydicom.Dataset, output_root: Path, ct_series_uid: str, file_name: str = SEG_FILE_NAME) -> Path:
    """Write ``seg`` to ``OUTPUT/dicom/<Study>/<ct_series_uid>/<file_name>``
    (``fmcib_patch_region_SEG.dcm``, or ``..._part<i>of<n>.dcm`` for a split SEG)."""
    folder = dicom_output_dir(output_root, str(seg.StudyInstanceUID), ct_series_uid)
    return atomic_write_dataset(seg, folder / file_name)
