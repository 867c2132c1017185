"""Pull a study's CT and segmentation instances with WADO-RS into an on-disk cache.

Instances are retrieved one at a time (memory: one instance), with transfer syntax ``*``
so the server sends each in the encoding it stored (no lossy or costly transcoding on the
server); pydicom decodes compressed pixel data later, when the CT is read (JPEG, JPEG-LS,
JPEG 2000 and RLE through pylibjpeg / pyjpegls).

Each file is written as ``<dest>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` through a
hidden ``.part`` file renamed into place, so a file that exists is complete. On any error
the whole study folder is removed before the error propagates: no partial study is left.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom

from mhub_fmcib.dicomweb.errors import (
    DicomWebCacheLimitError,
    DicomWebNothingToProcessError,
    DicomWebOptionError,
    DicomWebServerError,
)
from mhub_fmcib.dicomweb.selection import StudyPlan
from mhub_fmcib.dicomweb.session import DicomWebClient, translated_errors
from mhub_fmcib.dicomweb.settings import CACHE_LIMIT_OPTION

logger = logging.getLogger(__name__)

#: Ask for the stored encoding (PS3.18 8.7.3.5.2).
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)


@dataclass(frozen=True)
class PulledStudy:
    """A study on disk.

    Attributes:
        study_uid: StudyInstanceUID.
        folder: the study folder (one sub-folder per series).
        files: every file written, in pull order.
        bytes: their total size in bytes.
    """

    study_uid: str
    folder: Path
    files: tuple[Path, ...]
    bytes: int


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


def pull_study(
    client: DicomWebClient,
    plan: StudyPlan,
    dest_dir: Path,
    *,
    include_unsegmented: bool = False,
    cache_root: Path | None = None,
    on_instance: Callable[[Path], None] | None = None,
) -> PulledStudy:
    """Retrieve the instances :meth:`StudyPlan.instances_to_pull` lists into ``dest_dir``.

    Args:
        client: the server; its settings give the cache limit.
        plan: from :func:`mhub_fmcib.dicomweb.plan_study`.
        dest_dir: the study's folder; must not exist or be empty.
        include_unsegmented: also pull CT series no SEG/RTSTRUCT references.
        cache_root: the folder the cache limit applies to (default ``dest_dir``): the
            bytes already under it plus those pulled must stay within
            ``settings.cache_limit_bytes``.
        on_instance: called with each file's path once it is complete (progress).

    Raises:
        DicomWebNothingToProcessError: nothing to pull (no CT, or no segmented CT).
        DicomWebCacheLimitError: the cache would exceed its limit.
        DicomWebConnectionError, DicomWebServerError, DicomWebAuthError: transfer failed.
        DicomWebOptionError: ``dest_dir`` holds files already.
    """
    pairs = plan.instances_to_pull(include_unsegmented)
    if not pairs:
        if not plan.ct_series:
            raise DicomWebNothingToProcessError(f"Study {plan.study_uid} has no CT series")
        raise DicomWebNothingToProcessError(
            f"Study {plan.study_uid} has CT series "
            f"{', '.join(s.series_uid for s in plan.ct_series)} but no SEG or RTSTRUCT "
            "references them; give seed points to process them"
        )
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise DicomWebOptionError(f"The pull folder {dest_dir} is not empty; remove it or choose another cache folder")
    settings = client.settings
    limit = settings.cache_limit_bytes
    used = folder_bytes(cache_root if cache_root is not None else dest_dir)
    created = not dest_dir.exists()
    dest_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    total = 0
    try:
        for series_uid, sop_uid in pairs:
            with translated_errors(settings, "WADO-RS instance retrieval", plan.study_uid):
                dataset = client.retrieve_instance(plan.study_uid, series_uid, sop_uid, media_types=ANY_TRANSFER_SYNTAX)
            if dataset.get("SOPInstanceUID") != sop_uid:
                raise DicomWebServerError(
                    f"The server {settings.server} sent SOPInstanceUID "
                    f"{dataset.get('SOPInstanceUID')} when asked for {sop_uid}"
                )
            series_dir = dest_dir / series_uid
            series_dir.mkdir(exist_ok=True)
            final = series_dir / f"{sop_uid}.dcm"
            partial = series_dir / f".{sop_uid}.dcm.part"
            pydicom.dcmwrite(partial, dataset, enforce_file_format=True)
            size = partial.stat().st_size
            del dataset
            if used + total + size > limit:
                raise DicomWebCacheLimitError(
                    f"Pulling study {plan.study_uid} would make the DICOMweb cache larger than "
                    f"its limit of {limit / 1024**2:.1f} MiB ({limit} bytes; "
                    f"{used + total} bytes used); raise it with {CACHE_LIMIT_OPTION}"
                )
            os.replace(partial, final)
            files.append(final)
            total += size
            if on_instance is not None:
                on_instance(final)
    except BaseException:
        _remove_partial(dest_dir, created)
        raise
    logger.info("Pulled study %s: %d instances, %.1f MiB", plan.study_uid, len(files), total / 1024**2)
    return PulledStudy(study_uid=plan.study_uid, folder=dest_dir, files=tuple(files), bytes=total)
