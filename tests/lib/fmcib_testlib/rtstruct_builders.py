"""Build RTSTRUCT test inputs by hand with pydicom (no package builds RTSTRUCT without
OpenCV), and outline masks as contours with scikit-image's marching squares.

The files follow the RT Structure Set IOD closely enough that ``dciodvfy`` reports no
errors (checked in tests/mhub_fmcib/test_rtstruct.py)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds
from skimage.measure import find_contours

from mhub_fmcib.records import Volume

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.2"


@dataclass(frozen=True)
class RoiSpec:
    """One ROI to write: its contours as (ContourGeometricType, (N, 3) LPS mm points)."""

    name: str
    contours: Sequence[tuple[str, np.ndarray]]
    interpreted_type: str = "GTV"
    number: int | None = None
    frame_of_reference_uid: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def mask_to_contours(mask: np.ndarray, volume: Volume) -> list[np.ndarray]:
    """Outline a bool (I, J, K) mask slice by slice (marching squares at level 0.5, via
    :func:`skimage.measure.find_contours`): closed polygons, each (N, 3) in LPS mm. Holes
    come out as separate nested polygons."""
    out = []
    for k in range(mask.shape[2]):
        sl = mask[:, :, k]
        if not sl.any():
            continue
        padded = np.pad(sl.astype(np.float64), 1)
        for c in find_contours(padded, 0.5):
            ij = c[:-1] - 1.0  # closed: last point repeats the first; undo the padding
            ijk = np.column_stack([ij, np.full(len(ij), float(k))])
            out.append(volume.index_to_lps(ijk))
    return out


def _ds_list(points: np.ndarray) -> list[str]:
    return [format_number_as_ds(float(v)) for v in np.asarray(points, dtype=np.float64).ravel()]


def _nearest_slice(ct: Sequence[Dataset], z: float) -> Dataset:
    return min(ct, key=lambda d: abs(float(d.ImagePositionPatient[2]) - z))


def make_rtstruct(
    ct: Sequence[Dataset],
    rois: Sequence[RoiSpec],
    dest: Path,
    *,
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """Write an RTSTRUCT referencing the CT slices ``ct`` with the given ROIs.

    ``frame_of_reference_uid`` overrides the Frame of Reference everywhere (to make one
    that does not match the CT); an ROI's own ``frame_of_reference_uid`` overrides it for
    that ROI only."""
    first = ct[0]
    for_uid = frame_of_reference_uid or str(first.FrameOfReferenceUID)
    now = datetime.datetime(2024, 1, 2, 3, 4, 5)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, kw, first.get(kw, ""))
    for kw in ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, kw, first.get(kw, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 300
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "tests"
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "tests"
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    def image_ref(d: Dataset) -> Dataset:
        r = Dataset()
        r.ReferencedSOPClassUID = d.SOPClassUID
        r.ReferencedSOPInstanceUID = d.SOPInstanceUID
        return r

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([image_ref(d) for d in ct])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = for_uid
    for_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_ref])

    ss_rois, roi_contours, observations = [], [], []
    for n, spec in enumerate(rois, start=1):
        number = spec.number if spec.number is not None else n
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = spec.frame_of_reference_uid or for_uid
        item.ROIName = spec.name
        item.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(item)
        rc = Dataset()
        rc.ROIDisplayColor = [255, 0, 0]
        rc.ReferencedROINumber = number
        contours = []
        for gtype, pts in spec.contours:
            c = Dataset()
            c.ContourImageSequence = DicomSequence([image_ref(_nearest_slice(ct, float(np.mean(pts[:, 2]))))])
            c.ContourGeometricType = gtype
            c.NumberOfContourPoints = len(pts)
            c.ContourData = _ds_list(pts)
            for kw, v in spec.extra.items():
                setattr(c, kw, v)
            contours.append(c)
        if contours:
            rc.ContourSequence = DicomSequence(contours)
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = n
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = spec.interpreted_type
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(ss_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def square(
    ct_volume: Volume, k: int, i0: float, i1: float, j0: float, j1: float, *, clockwise: bool = False
) -> np.ndarray:
    """(4, 3) LPS mm: the rectangle with corners at continuous indices (i0..i1, j0..j1) on slice k."""
    ij = [(i0, j0), (i1, j0), (i1, j1), (i0, j1)]
    if clockwise:
        ij = ij[::-1]
    return ct_volume.index_to_lps(np.array([(i, j, float(k)) for i, j in ij]))


def save_with_preamble(src: Path, dest: Path) -> Path:
    """Re-save a DICOM file that lacks the preamble/file meta (pydicom's rtstruct.dcm)."""
    ds = pydicom.dcmread(src, force=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(dest, enforce_file_format=True)
    return dest
