"""Index a folder tree of DICOM files from their headers only.

Every file is either indexed (an :class:`InstanceRecord`) or skipped with a reason a person
can act on (:class:`SkippedFile`). Pixel data is never read here.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from .uids import (
    CT_SOP_CLASSES,
    MEDIA_STORAGE_DIRECTORY,
    OWN_MANUFACTURER_MODEL_NAME,
    READ_ERRORS,
    RT_STRUCTURE_SET_STORAGE,
    SEGMENTATION_STORAGE,
)

log = logging.getLogger(__name__)


class InstanceKind(str, Enum):
    """What an indexed instance is to us."""

    CT = "CT"
    SEG = "SEG"
    RTSTRUCT = "RTSTRUCT"


class SkipReason(str, Enum):
    """Why a file was not indexed."""

    NOT_DICOM = "not a DICOM file"
    UNREADABLE = "unreadable or truncated DICOM header"
    DICOMDIR = "DICOMDIR (media directory; the files it lists are indexed directly)"
    OTHER_OBJECT = "not a CT image, SEG or RTSTRUCT"
    LOCALIZER = "CT localizer (scout) image"
    MISSING_UIDS = "missing Study/Series/SOP Instance UID"
    OWN_OUTPUT = "written by mhub-fmcib (an earlier run's patch-region SEG), not an input segmentation"


@dataclass(frozen=True)
class InstanceRecord:
    """Header facts of one DICOM instance, enough to group and plan without pixels.

    ``referenced_series_uids``: for SEG and RTSTRUCT, the series their source images belong to.
    """

    path: Path
    kind: InstanceKind
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    modality: str
    referenced_series_uids: tuple[str, ...] = ()
    number_of_frames: int = 1
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed, with the reason."""

    path: Path
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class DicomIndex:
    """The result of indexing a folder tree."""

    root: Path
    instances: tuple[InstanceRecord, ...]
    skipped: tuple[SkippedFile, ...] = field(default=())

    def by_series(self, kind: InstanceKind | None = None) -> dict[str, list[InstanceRecord]]:
        """Series UID -> its instances (optionally of one kind), in path order."""
        out: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in sorted(self.instances, key=lambda r: str(r.path)):
            if kind is None or r.kind is kind:
                out[r.series_instance_uid].append(r)
        return dict(out)

    def of_kind(self, kind: InstanceKind) -> list[InstanceRecord]:
        """All instances of one kind, in path order."""
        return sorted((r for r in self.instances if r.kind is kind), key=lambda r: str(r.path))


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file below ``root`` (or ``root`` itself), sorted, symlinks not followed."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p


def _referenced_series(ds: pydicom.Dataset, kind: InstanceKind) -> tuple[str, ...]:
    uids: list[str] = []
    if kind is InstanceKind.SEG:
        for item in ds.get("ReferencedSeriesSequence", []):
            uid = item.get("SeriesInstanceUID")
            if uid:
                uids.append(str(uid))
    elif kind is InstanceKind.RTSTRUCT:
        for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
            for study in ref_for.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    uid = series.get("SeriesInstanceUID")
                    if uid:
                        uids.append(str(uid))
    return tuple(dict.fromkeys(uids))


def _frame_of_reference(ds: pydicom.Dataset, kind: InstanceKind) -> str | None:
    uid = ds.get("FrameOfReferenceUID")
    if not uid and kind is InstanceKind.RTSTRUCT:
        for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
            uid = ref_for.get("FrameOfReferenceUID")
            if uid:
                break
    return str(uid) if uid else None


def read_record(path: Path) -> InstanceRecord | SkippedFile:
    """Index one file from its header (pixel data is not read)."""
    try:
        st = path.stat()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return SkippedFile(path, SkipReason.NOT_DICOM)
    except READ_ERRORS as e:
        # struct.error: an element header cut short; OverflowError: absurd lengths
        return SkippedFile(path, SkipReason.UNREADABLE, f"{type(e).__name__}: {e}"[:300])
    try:
        media_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "")) if ds.file_meta else ""
        sop_class = str(ds.get("SOPClassUID", "") or media_class)
        if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            return SkippedFile(path, SkipReason.DICOMDIR)
        if sop_class in CT_SOP_CLASSES:
            kind = InstanceKind.CT
            image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
            if "LOCALIZER" in image_type:
                return SkippedFile(path, SkipReason.LOCALIZER)
        elif sop_class == SEGMENTATION_STORAGE:
            kind = InstanceKind.SEG
            if str(ds.get("ManufacturerModelName", "") or "") == OWN_MANUFACTURER_MODEL_NAME:
                return SkippedFile(path, SkipReason.OWN_OUTPUT)
        elif sop_class == RT_STRUCTURE_SET_STORAGE:
            kind = InstanceKind.RTSTRUCT
        else:
            modality = ds.get("Modality", "?")
            return SkippedFile(path, SkipReason.OTHER_OBJECT, f"Modality {modality}, SOP Class {sop_class}")
        study = str(ds.get("StudyInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if not (study and series and sop):
            return SkippedFile(path, SkipReason.MISSING_UIDS)
        return InstanceRecord(
            path=path,
            kind=kind,
            sop_class_uid=sop_class,
            sop_instance_uid=sop,
            study_instance_uid=study,
            series_instance_uid=series,
            frame_of_reference_uid=_frame_of_reference(ds, kind),
            modality=str(ds.get("Modality", "") or ""),
            referenced_series_uids=_referenced_series(ds, kind),
            number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
        )
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        return SkippedFile(path, SkipReason.UNREADABLE, f"{type(e).__name__}: {e}"[:300])


def index_files(paths: Iterable[Path], root: Path, workers: int = 1) -> DicomIndex:
    """Index ``paths`` (files below ``root``), optionally with a thread pool."""
    paths = list(paths)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(read_record, paths, chunksize=64))
    else:
        results = [read_record(p) for p in paths]
    instances = tuple(r for r in results if isinstance(r, InstanceRecord))
    skipped = tuple(r for r in results if isinstance(r, SkippedFile))
    for s in skipped:
        log.info("skipped %s: %s%s", s.path, s.reason.value, f" ({s.detail})" if s.detail else "")
    return DicomIndex(root=root, instances=instances, skipped=skipped)


def index_folder(root: Path, workers: int = 1) -> DicomIndex:
    """Index every file below ``root`` recursively, from headers only."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist")
    return index_files(iter_files(root), root, workers=workers)
