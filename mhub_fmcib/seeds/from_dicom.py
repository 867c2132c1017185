"""Seeds from DICOM segmentations: one lesion per selected SEG segment or RTSTRUCT ROI,
seeded at its centre of mass on the CT grid (or an RTSTRUCT ROI's single POINT contour).

:func:`iter_segments` is the one loop over the segments of a case's SEG/RTSTRUCT
instances; the pipeline and the radiomics baseline both use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..dicom.ct import CtSeries
from ..dicom.index import InstanceKind, InstanceRecord
from ..dicom.rtstruct import RtStruct, list_rois, read_rtstruct, roi_mask_on_ct, roi_point, select_rois
from ..dicom.seg import SegObject, read_seg, segment_mask_on_ct, segment_voxels_on_ct, select_segments
from ..errors import CaseError, NothingSelectedError, SegmentationError
from ..records import CaseFailure, DicomOrigin, Lesion, LesionMask, SeedPoint, SeedSource, make_lesion_id
from .from_files import series_ref
from .geometry import centre_of_mass_of_voxels, seed_inside_lesion_mask


@dataclass(frozen=True, eq=False)
class DicomSegment:
    """One selected segment (SEG) or ROI (RTSTRUCT) of a case, to be placed on its CT.

    Attributes:
        origin: where the lesion comes from (its id is ``make_lesion_id(origin)``).
        record: the SEG or RTSTRUCT instance.
        source: the object read from ``record``.
    """

    origin: DicomOrigin
    record: InstanceRecord
    source: SegObject | RtStruct

    @property
    def lesion_id(self) -> str:
        return make_lesion_id(self.origin)

    @property
    def what(self) -> str:
        """E.g. ``SEG /path/seg.dcm segment 1 (Nodule)``, for messages."""
        o = self.origin
        unit = "segment" if o.source_kind == "SEG" else "ROI"
        return f"{o.source_kind} {self.record.path} {unit} {o.segment_number} ({o.segment_label})"

    def mask(self, ct: CtSeries) -> npt.NDArray[np.bool_]:
        """The segment as a bool mask on the CT grid, shape (I, J, K).

        Raises:
            SegmentationError: it cannot be placed on the CT.
        """
        number = self.origin.segment_number
        if isinstance(self.source, RtStruct):
            return roi_mask_on_ct(self.source, number, ct)
        return segment_mask_on_ct(self.source, number, ct)

    def voxels(self, ct: CtSeries) -> npt.NDArray[np.int64]:
        """The segment's CT voxels, (N, 3) distinct (i, j, k) in ``np.argwhere`` order of
        :meth:`mask`; for a SEG without building a mask of the whole CT grid.

        Raises:
            SegmentationError: it cannot be placed on the CT.
        """
        if isinstance(self.source, RtStruct):
            return np.argwhere(self.mask(ct)).astype(np.int64)
        return segment_voxels_on_ct(self.source, self.origin.segment_number, ct)

    def point(self) -> SeedPoint | None:
        """The single POINT contour of an RTSTRUCT ROI (a marker), else ``None``."""
        return roi_point(self.source, self.origin.segment_number) if isinstance(self.source, RtStruct) else None


def _nothing_selected(rec: InstanceRecord, available: Sequence[str], wanted: Sequence[str]) -> CaseFailure:
    error = NothingSelectedError(
        f"{rec.kind.value} {rec.path}: none of its segments/ROIs ({', '.join(available)}) matches "
        f"--segments {', '.join(wanted)}"
    )
    return CaseFailure.of(f"{rec.kind.value} {rec.sop_instance_uid}", error, [str(rec.path)], kind="file")


def _segments_of(rec: InstanceRecord, ct: CtSeries, wanted: Sequence[str]) -> list[DicomSegment] | CaseFailure:
    """The selected segments of one SEG/RTSTRUCT instance, or why there are none."""
    series = series_ref(ct)
    try:
        if rec.kind is InstanceKind.RTSTRUCT:
            rt = read_rtstruct(rec.path)
            rois = select_rois(rt, wanted)
            if not rois:
                return _nothing_selected(rec, [f"{r.number}:{r.name}" for r in list_rois(rt)], wanted)
            return [
                DicomSegment(DicomOrigin(series, "RTSTRUCT", rt.sop_instance_uid, r.number, r.name), rec, rt)
                for r in rois
            ]
        seg = read_seg(rec.path)
    except SegmentationError as e:
        return CaseFailure.of(f"{rec.kind.value} {rec.sop_instance_uid}", e, [str(rec.path)])
    chosen = select_segments(seg, wanted)
    if not chosen:
        return _nothing_selected(rec, [f"{s.number}:{s.label}" for s in seg.segments], wanted)
    return [
        DicomSegment(
            DicomOrigin(
                series, "SEG", seg.sop_instance_uid, s.number, s.label, finding_type=s.property_type,
                finding_site=s.anatomic_region,
            ),
            rec,
            seg,
        )
        for s in chosen
    ]  # fmt: skip


def iter_segments(
    records: Sequence[InstanceRecord], ct: CtSeries, wanted: Sequence[str]
) -> Iterator[DicomSegment | CaseFailure]:
    """Every selected segment/ROI of the SEG and RTSTRUCT ``records`` of one CT series, in
    file then segment order; a file that cannot be read, or of which ``wanted`` (numbers or
    labels; empty selects all) selects nothing, yields a :class:`CaseFailure` instead."""
    for rec in records:
        found = _segments_of(rec, ct, wanted)
        if isinstance(found, CaseFailure):
            yield found
        else:
            yield from found


def lesion_of(segment: DicomSegment, ct: CtSeries) -> tuple[Lesion, LesionMask | None]:
    """The lesion of one segment: its centre of mass on the CT grid, or an ROI's POINT; and
    the segment's mask on the CT grid (cropped; ``None`` for a POINT ROI).

    Raises:
        CaseError: the segment cannot be placed on the CT, or is empty.
    """
    point = segment.point()
    if point is not None:
        return Lesion(segment.lesion_id, point, SeedSource.ROI_POINT, None, segment.origin), None
    # one segment at a time, as its voxel list (no whole-grid mask kept)
    voxels = segment.voxels(ct)
    seed = centre_of_mass_of_voxels(voxels, ct.volume, segment.what)
    mask = LesionMask.of_voxels(segment.lesion_id, ct.volume.shape, voxels)
    source = SeedSource.SEGMENT_CENTROID if segment.origin.source_kind == "SEG" else SeedSource.ROI_CENTROID
    lesion = Lesion(segment.lesion_id, seed, source, seed_inside_lesion_mask(seed, mask, ct.volume), segment.origin)
    return lesion, mask


def lesions_from_segments(
    records: Sequence[InstanceRecord], ct: CtSeries, wanted: Sequence[str]
) -> tuple[list[Lesion], list[LesionMask], list[CaseFailure]]:
    """One lesion per selected segment of every SEG (and ROI of every RTSTRUCT) of a CT
    series, with the segments' masks (for the QC outlines; they live as long as the case);
    a segment that fails is a failure with the lesion's id, the others go on."""
    lesions: list[Lesion] = []
    masks: list[LesionMask] = []
    failures: list[CaseFailure] = []
    for item in iter_segments(records, ct, wanted):
        if isinstance(item, CaseFailure):
            failures.append(item)
            continue
        try:
            lesion, mask = lesion_of(item, ct)
        except CaseError as e:
            failures.append(CaseFailure.of(item.lesion_id, e, [str(item.record.path)]))
            continue
        lesions.append(lesion)
        if mask is not None:
            masks.append(mask)
    return lesions, masks, failures
