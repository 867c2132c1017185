"""Pull a study's CT and segmentation instances with WADO-RS into an on-disk cache.

Instances are retrieved one at a time (memory: one instance), with transfer syntax ``*``
so the server sends each in the encoding it stored (no lossy or costly transcoding on the
server), and written byte for byte as the server sent them; pydicom decodes compressed
pixel data later, when the CT is read (JPEG, JPEG-LS, JPEG 2000 and RLE through pylibjpeg /
pyjpegls).

Every answer is checked before it is written: the media type must be
``multipart/related`` (or, as some servers send, bare ``application/dicom``), the body must
be complete (closing boundary, see :mod:`mhub_fmcib.dicomweb.multipart`) and hold exactly
one ``application/dicom`` part that is a DICOM file of the instance asked for. Anything else
fails the study with a :class:`DicomWebServerError` that says what the server sent.

Each file is written as ``<dest>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` through a
hidden ``.<name>.part`` file renamed into place, so a file that exists is complete. On an
error or a stop request the whole study folder is removed before the error propagates. A
folder left by a process that was killed (``kill -9``, power loss) is *resumed* by the next
pull: its complete instances are kept (after their header is checked), its ``.part`` files
and anything not in the plan are removed, and only the missing instances are retrieved.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from mhub_fmcib.dicomweb.errors import (
    DicomWebCacheLimitError,
    DicomWebInterruptedError,
    DicomWebNothingToProcessError,
    DicomWebServerError,
)
from mhub_fmcib.dicomweb.multipart import MultipartError, media_type, split_multipart
from mhub_fmcib.dicomweb.selection import StudyPlan
from mhub_fmcib.dicomweb.session import DicomWebClient, body_excerpt, translated_errors
from mhub_fmcib.dicomweb.settings import CACHE_LIMIT_OPTION

logger = logging.getLogger(__name__)

#: Ask for the stored encoding (PS3.18 8.7.3.5.2).
ACCEPT_ANY_TRANSFER_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class PulledStudy:
    """A study on disk.

    Attributes:
        study_uid: StudyInstanceUID.
        folder: the study folder (one sub-folder per series).
        files: every file of the study, in pull order.
        bytes: their total size in bytes.
        resumed: how many of ``files`` an earlier, interrupted pull had left complete.
    """

    study_uid: str
    folder: Path
    files: tuple[Path, ...]
    bytes: int
    resumed: int = 0


def folder_bytes(folder: Path) -> int:
    """Total size in bytes of the regular files under ``folder`` (0 if it does not exist)."""
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _remove_partial(dest_dir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest_dir, ignore_errors=True)
    elif dest_dir.exists():
        for child in dest_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _instance_url(client: DicomWebClient, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{client.settings.url.rstrip('/')}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def _dicom_content(client: DicomWebClient, content_type: str, body: bytes, what: str) -> bytes:
    """The one DICOM file in a WADO-RS answer, or a DicomWebServerError saying what was sent."""
    server = client.settings.server
    kind, params = media_type(content_type)
    if kind == "application/dicom":  # non-compliant but common: the part not encapsulated
        return body
    if kind != "multipart/related":
        raise DicomWebServerError(
            f"The DICOMweb server {server} answered {what} with Content-Type {content_type!r} "
            f'(expected multipart/related; type="application/dicom"); the body starts {body_excerpt(body)}'
        )
    try:
        parts = split_multipart(body, params.get("boundary", ""))
    except MultipartError as exc:
        raise DicomWebServerError(
            f"The DICOMweb server {server} sent a malformed multipart answer to {what}: {exc}"
        ) from None
    if len(parts) != 1:
        raise DicomWebServerError(
            f"The DICOMweb server {server} sent {len(parts)} parts in its answer to {what}; expected one instance"
        )
    part = parts[0]
    if part.content_type not in ("", "application/dicom"):
        raise DicomWebServerError(
            f"The DICOMweb server {server} sent a part of Content-Type {part.content_type!r} in its answer "
            f"to {what} (expected application/dicom); it starts {body_excerpt(part.content)}"
        )
    return part.content


def retrieve_instance_bytes(client: DicomWebClient, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
    """One instance as the DICOM file (PS3.10) the server stored, checked to be that instance.

    Raises:
        DicomWebServerError: the answer is not one DICOM file of ``sop_uid`` (wrong media
            type, malformed or truncated multipart body, non-DICOM content, another instance).
        DicomWebConnectionError, DicomWebAuthError, DicomWebDeadlineError,
        DicomWebInterruptedError: see :func:`~mhub_fmcib.dicomweb.session.translated_errors`.
    """
    what = f"WADO-RS retrieval of instance {sop_uid} of study {study_uid}"
    with translated_errors(client, what, study_uid):
        response = client.http.get(
            _instance_url(client, study_uid, series_uid, sop_uid),
            headers={"Accept": ACCEPT_ANY_TRANSFER_SYNTAX},
            timeout=client.settings.timeout_s,
        )
        response.raise_for_status()
        body = response.content
    content = _dicom_content(client, response.headers.get("Content-Type", ""), body, what)
    try:
        header = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomWebServerError(
            f"The DICOMweb server {client.settings.server} sent content that is not a DICOM file in "
            f"its answer to {what} ({type(exc).__name__}); it starts {body_excerpt(content)}"
        ) from None
    sent = header.get("SOPInstanceUID")
    if sent != sop_uid:
        raise DicomWebServerError(
            f"The DICOMweb server {client.settings.server} sent SOPInstanceUID {sent} when asked for {sop_uid}"
        )
    return content


def _is_complete_instance(path: Path, sop_uid: str) -> bool:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True).get("SOPInstanceUID") == sop_uid
    except (OSError, InvalidDicomError, EOFError, ValueError, KeyError, TypeError):
        return False


def resume_folder(dest_dir: Path, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """Clean a study folder left by an interrupted pull; return the complete instances kept.

    ``.part`` files, files not in ``pairs`` and files whose header is not the instance their
    name says are removed; empty series folders too.
    """
    wanted = {dest_dir / series / f"{sop}.dcm": (series, sop) for series, sop in pairs}
    kept: dict[tuple[str, str], Path] = {}
    for path in sorted(dest_dir.rglob("*")):
        if path.is_dir():
            continue
        pair = wanted.get(path)
        if pair is not None and _is_complete_instance(path, pair[1]):
            kept[pair] = path
        else:
            path.unlink(missing_ok=True)
    for folder in sorted((p for p in dest_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return kept


def _write_instance(dest_dir: Path, series_uid: str, sop_uid: str, content: bytes) -> Path:
    series_dir = dest_dir / series_uid
    series_dir.mkdir(exist_ok=True)
    final = series_dir / f"{sop_uid}.dcm"
    partial = series_dir / f".{sop_uid}.dcm{PART_SUFFIX}"
    partial.write_bytes(content)
    os.replace(partial, final)
    return final


def _nothing_to_pull(plan: StudyPlan) -> DicomWebNothingToProcessError:
    if not plan.ct_series:
        return DicomWebNothingToProcessError(f"Study {plan.study_uid} has no CT series")
    return DicomWebNothingToProcessError(
        f"Study {plan.study_uid} has CT series "
        f"{', '.join(s.series_uid for s in plan.ct_series)} but no SEG or RTSTRUCT "
        "references them; give seed points to process them"
    )


def pull_study(
    client: DicomWebClient,
    plan: StudyPlan,
    dest_dir: Path,
    *,
    include_unsegmented: bool = False,
    cache_root: Path | None = None,
    on_instance: Callable[[Path], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PulledStudy:
    """Retrieve the instances :meth:`StudyPlan.instances_to_pull` lists into ``dest_dir``.

    Args:
        client: the server; its settings give the cache limit.
        plan: from :func:`mhub_fmcib.dicomweb.plan_study`.
        dest_dir: the study's folder; if an interrupted pull left files in it, they are
            resumed (see the module docstring).
        include_unsegmented: also pull CT series no SEG/RTSTRUCT references.
        cache_root: the folder the cache limit applies to (default ``dest_dir``): the
            bytes already under it plus those pulled must stay within
            ``settings.cache_limit_bytes``.
        on_instance: called with each newly written file's path once it is complete.
        should_stop: asked before each instance; True stops the pull.

    Raises:
        DicomWebNothingToProcessError: nothing to pull (no CT, or no segmented CT).
        DicomWebCacheLimitError: the cache would exceed its limit.
        DicomWebInterruptedError: ``should_stop`` said stop; the folder is removed.
        DicomWebConnectionError, DicomWebServerError, DicomWebAuthError,
        DicomWebDeadlineError: transfer failed.
    """
    pairs = plan.instances_to_pull(include_unsegmented)
    if not pairs:
        raise _nothing_to_pull(plan)
    limit = client.settings.cache_limit_bytes
    created = not dest_dir.exists()
    kept = {} if created else resume_folder(dest_dir, pairs)
    if kept:
        logger.info(
            "Resuming the pull of study %s: %d of %d instances left complete by an interrupted run",
            plan.study_uid,
            len(kept),
            len(pairs),
        )
    used = folder_bytes(cache_root if cache_root is not None else dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    total = sum(p.stat().st_size for p in kept.values())
    new_bytes = 0
    try:
        for series_uid, sop_uid in pairs:
            if (series_uid, sop_uid) in kept:
                files.append(kept[(series_uid, sop_uid)])
                continue
            if should_stop is not None and should_stop():
                raise DicomWebInterruptedError(f"Stop requested while pulling study {plan.study_uid}")
            content = retrieve_instance_bytes(client, plan.study_uid, series_uid, sop_uid)
            if used + new_bytes + len(content) > limit:
                raise DicomWebCacheLimitError(
                    f"Pulling study {plan.study_uid} would make the DICOMweb cache larger than "
                    f"its limit of {limit / 1024**2:.1f} MiB ({limit} bytes; "
                    f"{used + new_bytes} bytes used); raise it with {CACHE_LIMIT_OPTION}"
                )
            final = _write_instance(dest_dir, series_uid, sop_uid, content)
            del content
            files.append(final)
            size = final.stat().st_size
            total += size
            new_bytes += size
            if on_instance is not None:
                on_instance(final)
    except BaseException:
        _remove_partial(dest_dir, created)
        raise
    logger.info("Pulled study %s: %d instances, %.1f MiB", plan.study_uid, len(files), total / 1024**2)
    return PulledStudy(study_uid=plan.study_uid, folder=dest_dir, files=tuple(files), bytes=total, resumed=len(kept))
