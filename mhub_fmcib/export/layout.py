"""Where DICOM outputs go, how they are written, and how their UIDs are made.

Layout: ``OUTPUT/dicom/<StudyInstanceUID>/<SeriesInstanceUID of the input CT>/<file>.dcm``.
UIDs are validated against the DICOM UID grammar before they become folder names, so no
input can make us write outside ``OUTPUT``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExportError
from .atomic import atomic_write

if TYPE_CHECKING:
    import pydicom

#: DICOM UID grammar (PS3.5 9.1): dot-separated numeric components, no leading zeros
#: (except a lone "0"), at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

#: File names inside a series folder.
SR_FILE_NAME = "fmcib_features_SR.dcm"
SEG_FILE_NAME = "fmcib_patch_region_SEG.dcm"


def sr_file_name(part: int, parts: int) -> str:
    """File name of SR ``part`` (1-based) of ``parts`` for one CT series:
    :data:`SR_FILE_NAME` when the series has one SR, else ``fmcib_features_SR_part<i>of<n>.dcm``."""
    if parts == 1:
        return SR_FILE_NAME
    return f"fmcib_features_SR_part{part}of{parts}.dcm"


def seg_file_name(part: int, parts: int) -> str:
    """File name of patch-region SEG ``part`` (1-based) of ``parts`` for one CT series:
    :data:`SEG_FILE_NAME` when the series has one, else ``fmcib_patch_region_SEG_part<i>of<n>.dcm``."""
    if parts == 1:
        return SEG_FILE_NAME
    return f"fmcib_patch_region_SEG_part{part}of{parts}.dcm"


#: UUID namespace of every UID this package derives (changing it changes every UID).
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/mhub-fmcib/uids")


def check_uid(uid: str, what: str) -> str:
    """Return ``uid`` if it follows the DICOM UID grammar, else raise :class:`ExportError`."""
    if not isinstance(uid, str) or len(uid) > 64 or not _UID_RE.match(uid):
        raise ExportError(
            f"{what} {uid!r} is not a valid DICOM UID (digits and dots, no leading zeros, "
            "at most 64 characters); fix the input file's UID before exporting"
        )
    return uid


def dicom_output_dir(output: Path, study_uid: str, series_uid: str) -> Path:
    """``output/dicom/<study_uid>/<series_uid>``; both UIDs are validated first.

    The folder is not created here. A UID containing ``/`` or ``..`` (or anything else
    outside the UID grammar) raises :class:`ExportError`.
    """
    check_uid(study_uid, "StudyInstanceUID")
    check_uid(series_uid, "SeriesInstanceUID")
    return Path(output) / "dicom" / study_uid / series_uid


def derive_uid(*parts: str) -> str:
    """A ``2.25.<UUID as integer>`` UID that is a deterministic function of ``parts``.

    The UUID is the name-based (SHA-1, version 5) UUID of the parts joined by U+001F in
    our own UUID namespace, so the same parts always give the same UID (re-sending an
    output to a PACS replaces rather than duplicates it), and different parts collide with
    the probability of a 122-bit hash. The 2.25 arc is ISO/IEC 9834-8's arc for UUIDs
    (PS3.5 B.2); such UIDs are at most 44 characters. (pydicom's ``generate_uid`` ignores
    ``entropy_srcs`` when ``prefix`` is ``None``, so it is not used here.)
    """
    if not parts:
        raise ValueError("derive_uid needs at least one part")
    name = "\x1f".join(map(str, parts))
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, name).int}"


def safe_file_stem(name: str, max_len: int = 80) -> str:
    """A file name stem made from an arbitrary string: only ``[A-Za-z0-9._-]``, no leading
    dot, never a path, and unique per input (8 hex digits of its sha1 are appended)."""
    cleaned = _SAFE_CHARS.sub("_", name).strip("._") or "x"
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[:max_len]}_{digest}"


def atomic_write_dataset(ds: pydicom.Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file at ``path`` through the one atomic writer
    (:func:`mhub_fmcib.export.atomic.atomic_write`) and return ``path``."""
    return atomic_write(path, lambda fh: ds.save_as(fh, enforce_file_format=True))
