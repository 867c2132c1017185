"""Read one DICOM file, with or without the 128-byte preamble and ``DICM`` prefix.

Many older exports (and pydicom's own ``rtstruct.dcm``) are a bare data set: no preamble, no
File Meta Information. They are read with ``force=True`` and accepted only when they really
parsed as DICOM (a SOP Class UID is present); the transfer syntax pydicom detected is then
recorded in a file meta so pixel data can be decoded.

pydicom is imported on the first read, not with this module: a run on NRRD or NIfTI files
never loads it (0.4 s of start-up on a 2-core machine, measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .uids import READ_ERRORS

if TYPE_CHECKING:
    import pydicom


def _has_dicm_prefix(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def read_dataset(path: Path, stop_before_pixels: bool = False, defer_size: int | None = None) -> pydicom.Dataset:
    """The data set of ``path``; a file without preamble/``DICM`` prefix is read when it parses
    as DICOM. ``defer_size``: values larger than this many bytes (pixel data) are read from
    the file only when accessed (pydicom's ``defer_size``).

    Raises:
        InvalidDicomError: not a DICOM file (no preamble and no SOP Class UID once forced).
        READ_ERRORS (see :mod:`mhub_fmcib.dicom.uids`): damaged or truncated content.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    except InvalidDicomError:
        if _has_dicm_prefix(path):
            raise  # a file with the prefix whose header is damaged is not read by force
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True, defer_size=defer_size)
    except READ_ERRORS as e:  # without a preamble, content that does not parse is not DICOM
        raise InvalidDicomError(f"{path}: no DICOM preamble and does not parse as DICOM ({type(e).__name__})") from e
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if not sop_class or not str(sop_class).strip(" \x00"):
        raise InvalidDicomError(f"{path}: no DICOM preamble and no SOP Class UID")
    if meta is None or "TransferSyntaxUID" not in meta:
        meta = meta if meta is not None else FileMetaDataset()
        if ds.is_implicit_VR:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        else:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if ds.is_little_endian else ExplicitVRBigEndian
        ds.file_meta = meta
    return ds


def transfer_syntax(ds: pydicom.Dataset) -> pydicom.uid.UID:
    """The Transfer Syntax UID of ``ds``'s file meta (``UID("")`` when it has none)."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    return UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")


def invalid_dicom_error() -> type[Exception]:
    """pydicom's ``InvalidDicomError`` (not a DICOM file), imported when first asked for: for
    ``except invalid_dicom_error():``, which Python evaluates only once something was raised."""
    from pydicom.errors import InvalidDicomError

    return InvalidDicomError


def not_parsed() -> tuple[type[BaseException], ...]:
    """What :func:`read_dataset` raises for a file that is not (readable) DICOM:
    ``InvalidDicomError`` and :data:`READ_ERRORS` (for ``except not_parsed():``)."""
    return (invalid_dicom_error(), *READ_ERRORS)


def looks_like_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file by :func:`read_dataset`'s rule (headers only)."""
    try:
        read_dataset(path, stop_before_pixels=True)
    except not_parsed():
        return False
    return True
