"""Index a folder tree of DICOM files from their headers only.

Every file is either indexed (an :class:`InstanceRecord`) or skipped with a reason a person
can act on (:class:`SkippedFile`). Pixel data is never read here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from .read import invalid_dicom_error, not_parsed, read_dataset
from .uids import (
    CT_SOP_CLASSES,
    MEDIA_STORAGE_DIRECTORY,
    OWN_MANUFACTURER_MODEL_NAME,
    READ_ERRORS,
    RT_STRUCTURE_SET_STORAGE,
    SEGMENTATION_STORAGE,
)

if TYPE_CHECKING:
    import pydicom

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


@dataclass(frozen=True)
class FileStat:
    """A regular file found by :func:`iter_file_stats`: its path, size (bytes) and mtime (ns)."""

    path: Path
    size: int
    mtime_ns: int


def iter_file_stats(root: Path) -> Iterator[FileStat]:
    """Every regular file below ``root`` (or ``root`` itself), sorted by path within each
    folder, symlinks not followed; one ``stat`` per file (from the directory scan)."""
    root = Path(root)
    if root.is_file():
        st = root.stat()
        yield FileStat(root, st.st_size, st.st_mtime_ns)
        return
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable folder: like os.walk, skip it
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                yield FileStat(Path(entry.path), st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subfolders))


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file below ``root`` (or ``root`` itself), sorted, symlinks not followed."""
    for f in iter_file_stats(root):
        yield f.path


#: Data element tags (group << 16 | element) of what the index reads; pydicom takes a plain
#: int wherever it takes a tag.
_MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
_IMAGE_ORIENTATION = 0x00200037
_IMAGE_POSITION = 0x00200032
_PER_FRAME_GROUPS = 0x52009230
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_PIXEL_SPACING = 0x00280030
_IMAGE_TYPE = 0x00080008
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_MODALITY = 0x00080060
_MANUFACTURER_MODEL_NAME = 0x00081090
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_FRAME_OF_REFERENCE_UID = 0x00200052
_NUMBER_OF_FRAMES = 0x00280008
_DIRECTORY_RECORD_SEQUENCE = 0x00041220


def _text(ds: pydicom.Dataset, tag: int) -> str:
    """The value of a text element (UI, CS, LO, IS) of ``ds``, or ``""``.

    Read from the element's bytes as stored (Latin-1, leading/trailing spaces and NULs
    removed, several values joined by a backslash) instead of through pydicom's value
    conversion, which is a third of the index's time. The index only compares these values
    (UIDs, SOP classes, defined terms, our ASCII model name) and parses NumberOfFrames.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \x00")
    if isinstance(value, str):
        return value.strip(" \x00")
    if isinstance(value, Sequence):  # list, tuple, pydicom's MultiValue (str and bytes were above)
        return "\\".join(str(v) for v in value)
    return str(value)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


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
    uid: object = _text(ds, _FRAME_OF_REFERENCE_UID)
    if not uid and kind is InstanceKind.RTSTRUCT:
        for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
            uid = ref_for.get("FrameOfReferenceUID")
            if uid:
                break
    return str(uid) if uid else None


def derived_uid(*parts: str) -> str:
    """A stable UID (``2.25.…``, from a hash of ``parts``) for an instance whose export left a
    UID blank: the same file in the same place always gets the same UID."""
    digest = hashlib.sha256("\0".join(["mhub-fmcib derived UID", *parts]).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"  # a UUID-derived UID (PS3.5 B.2)


def _instance_uids(ds: pydicom.Dataset, kind: InstanceKind, path: Path) -> tuple[str, str, str]:
    """Study, Series and SOP Instance UID of ``ds``. Anonymised CT often has them blank: the
    SOP Instance UID is then taken from the file meta, and a blank Series (Study) Instance UID
    is derived from the folder and the in-plane geometry (orientation, pixel grid, spacing), so
    the files of one series in one folder form one series. SEG/RTSTRUCT get no derived UIDs."""
    study = _text(ds, _STUDY_INSTANCE_UID)
    series = _text(ds, _SERIES_INSTANCE_UID)
    sop = _text(ds, _SOP_INSTANCE_UID)
    if not sop and ds.file_meta:
        sop = _text(ds.file_meta, _MEDIA_STORAGE_SOP_INSTANCE_UID)
    if kind is not InstanceKind.CT or not sop or not _has_image_geometry(ds):
        return study, series, sop  # only an image with its geometry can be placed in a derived series
    folder = str(path.parent.resolve())
    if not series:
        geometry = [_text(ds, t) for t in (_IMAGE_ORIENTATION, _ROWS, _COLUMNS, _PIXEL_SPACING)]
        series = derived_uid("series", folder, study, *geometry)
    if not study:
        study = derived_uid("study", folder)
    return study, series, sop


def _has_image_geometry(ds: pydicom.Dataset) -> bool:
    return _IMAGE_POSITION in ds or _PER_FRAME_GROUPS in ds


def uids_were_derived(path: Path) -> bool:
    """Whether the Study or Series Instance UID of the CT file ``path`` is blank (so the
    index derived it, :func:`derived_uid`)."""
    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except not_parsed():
        return False
    return not (_text(ds, _STUDY_INSTANCE_UID) and _text(ds, _SERIES_INSTANCE_UID) and _text(ds, _SOP_INSTANCE_UID))


def with_record_uids(ds: pydicom.Dataset, rec: InstanceRecord) -> pydicom.Dataset:
    """``ds`` with its blank Study/Series/SOP Instance UIDs set to those the index gave its
    record (from the file meta, or derived), so every output names the same UIDs."""
    for keyword, uid in (
        ("StudyInstanceUID", rec.study_instance_uid),
        ("SeriesInstanceUID", rec.series_instance_uid),
        ("SOPInstanceUID", rec.sop_instance_uid),
    ):
        if not str(ds.get(keyword, "") or "").strip(" \x00"):
            setattr(ds, keyword, uid)
    return ds


def read_record(path: Path, known: FileStat | None = None) -> InstanceRecord | SkippedFile:
    """Index one file from its header (pixel data is not read); ``known`` is its size and
    mtime from the directory scan (else they are read with ``stat``)."""
    try:
        size, mtime_ns = (known.size, known.mtime_ns) if known is not None else _stat(path)
        ds = read_dataset(path, stop_before_pixels=True)
    except invalid_dicom_error():
        return SkippedFile(path, SkipReason.NOT_DICOM)
    except READ_ERRORS as e:
        # struct.error: an element header cut short; OverflowError: absurd lengths
        return SkippedFile(path, SkipReason.UNREADABLE, f"{type(e).__name__}: {e}"[:300])
    try:
        media_class = _text(ds.file_meta, _MEDIA_STORAGE_SOP_CLASS_UID) if ds.file_meta else ""
        sop_class = _text(ds, _SOP_CLASS_UID) or media_class
        if media_class == MEDIA_STORAGE_DIRECTORY or _DIRECTORY_RECORD_SEQUENCE in ds:
            return SkippedFile(path, SkipReason.DICOMDIR)
        if sop_class in CT_SOP_CLASSES:
            kind = InstanceKind.CT
            image_type = [v.strip().upper() for v in _text(ds, _IMAGE_TYPE).split("\\")]
            if "LOCALIZER" in image_type:
                return SkippedFile(path, SkipReason.LOCALIZER)
        elif sop_class == SEGMENTATION_STORAGE:
            kind = InstanceKind.SEG
            if _text(ds, _MANUFACTURER_MODEL_NAME) == OWN_MANUFACTURER_MODEL_NAME:
                return SkippedFile(path, SkipReason.OWN_OUTPUT)
        elif sop_class == RT_STRUCTURE_SET_STORAGE:
            kind = InstanceKind.RTSTRUCT
        else:
            modality = _text(ds, _MODALITY) or "?"
            return SkippedFile(path, SkipReason.OTHER_OBJECT, f"Modality {modality}, SOP Class {sop_class}")
        study, series, sop = _instance_uids(ds, kind, path)
        if not (study and series and sop):
            return SkippedFile(path, SkipReason.MISSING_UIDS)
        frames = _text(ds, _NUMBER_OF_FRAMES)
        return InstanceRecord(
            path=path,
            kind=kind,
            sop_class_uid=sop_class,
            sop_instance_uid=sop,
            study_instance_uid=study,
            series_instance_uid=series,
            frame_of_reference_uid=_frame_of_reference(ds, kind),
            modality=_text(ds, _MODALITY),
            referenced_series_uids=_referenced_series(ds, kind),
            number_of_frames=int(frames) if frames else 1,
            size=size,
            mtime_ns=mtime_ns,
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
