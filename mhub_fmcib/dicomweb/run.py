"""One DICOMweb run: select studies, then per study plan → pull → process → (store).

A failing study (unknown UID, nothing to process, transfer failure, cache full, processing
or store failure: any :class:`~mhub_fmcib.errors.CaseError` or DICOMweb error other than
authentication) is recorded in its :class:`StudyOutcome` and the run goes on with the next
study. Bad credentials stop the run: no other study could succeed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mhub_fmcib.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebConnectionError,
    DicomWebServerError,
    DicomWebStoreError,
)
from mhub_fmcib.dicomweb.pull import pull_study
from mhub_fmcib.dicomweb.selection import plan_study, select_studies
from mhub_fmcib.dicomweb.session import open_client
from mhub_fmcib.dicomweb.settings import DicomWebSettings
from mhub_fmcib.dicomweb.store import StoreReport, store_instances
from mhub_fmcib.errors import CaseError

logger = logging.getLogger(__name__)

#: ``process_folder(input_folder, output_folder)`` → the DICOM files it wrote (SR, SEG).
ProcessFolder = Callable[[Path, Path], list[Path]]
CACHE_FOLDER_NAME = ".dicomweb-cache"


class StudyStatus(StrEnum):
    """Outcome of one study."""

    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class StudyOutcome:
    """What happened to one study.

    Attributes:
        study_uid: StudyInstanceUID.
        status: done or failed.
        error: the error message (never holds a secret), None when done.
        error_type: the exception class name, None when done.
        pulled_instances, pulled_bytes: what was pulled.
        outputs: files ``process_folder`` wrote.
        store: STOW-RS report, None without ``store`` or before storing.
        seconds: wall seconds per stage (``pull`` includes planning, ``process``, ``store``).
    """

    study_uid: str
    status: StudyStatus
    error: str | None = None
    error_type: str | None = None
    pulled_instances: int = 0
    pulled_bytes: int = 0
    outputs: tuple[Path, ...] = ()
    store: StoreReport | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """JSON-ready summary for ``run.json``."""
        return {
            "study_uid": self.study_uid,
            "status": self.status.value,
            "error": self.error,
            "error_type": self.error_type,
            "pulled_instances": self.pulled_instances,
            "pulled_bytes": self.pulled_bytes,
            "outputs": [str(p) for p in self.outputs],
            "store": None if self.store is None else self.store.to_json(),
            "seconds": dict(self.seconds),
        }


@dataclass(frozen=True)
class DicomWebRunReport:
    """All studies of a run, in order."""

    settings: DicomWebSettings
    studies: tuple[StudyOutcome, ...]

    @property
    def n_failed(self) -> int:
        """How many studies failed."""
        return sum(s.status is StudyStatus.FAILED for s in self.studies)

    @property
    def ok(self) -> bool:
        """True when every study is done."""
        return self.n_failed == 0

    def to_json(self) -> dict[str, object]:
        """JSON-ready summary for ``run.json``; holds no credentials."""
        return {
            "server": self.settings.to_json(),
            "studies": [s.to_json() for s in self.studies],
        }


def run_dicomweb(
    settings: DicomWebSettings,
    study_uids: Sequence[str],
    output: Path,
    process_folder: ProcessFolder,
    store: bool,
    *,
    studies_file: Path | None = None,
    queries: Sequence[str] = (),
    include_unsegmented: bool = False,
    keep_pulled: bool = False,
    on_instance: Callable[[Path], None] | None = None,
) -> DicomWebRunReport:
    """Pull, process and optionally store every selected study.

    Args:
        settings: the server.
        study_uids, studies_file, queries: the selection, see
            :func:`mhub_fmcib.dicomweb.select_studies`.
        output: output folder; study ``UID`` is processed into ``output/UID``.
        process_folder: the folder pipeline; returns the DICOM files it wrote.
        store: STOW-RS the returned files back to the server.
        include_unsegmented: pull CT series without SEG/RTSTRUCT too (seeds given).
        keep_pulled: keep the pulled studies in the cache after processing; by default
            each is removed once processed, so the cache holds one study at a time.
        on_instance: called with each pulled file's path (progress).

    Raises:
        DicomWebOptionError: bad selection. DicomWebAuthError: credentials refused.
        DicomWebConnectionError, DicomWebServerError: the study selection itself failed.
    """
    client = open_client(settings)
    uids = select_studies(client, study_uids, studies_file, queries)
    cache = settings.cache_dir if settings.cache_dir is not None else output / CACHE_FOLDER_NAME
    output.mkdir(parents=True, exist_ok=True)
    outcomes: list[StudyOutcome] = []
    for uid in uids:
        seconds: dict[str, float] = {}
        pulled_instances = pulled_bytes = 0
        outputs: list[Path] = []
        report: StoreReport | None = None
        study_cache = cache / uid
        started = time.perf_counter()
        try:
            plan = plan_study(client, uid)
            pulled = pull_study(
                client,
                plan,
                study_cache,
                include_unsegmented=include_unsegmented,
                cache_root=cache,
                on_instance=on_instance,
            )
            pulled_instances, pulled_bytes = len(pulled.files), pulled.bytes
            seconds["pull"] = time.perf_counter() - started
            started = time.perf_counter()
            study_output = output / uid
            study_output.mkdir(parents=True, exist_ok=True)
            outputs = list(process_folder(pulled.folder, study_output))
            seconds["process"] = time.perf_counter() - started
            if store:
                started = time.perf_counter()
                report = store_instances(client, outputs)
                seconds["store"] = time.perf_counter() - started
                if not report.ok:
                    raise DicomWebStoreError(
                        f"STOW-RS stored {len(report.stored)} of "
                        f"{len(report.stored) + len(report.failed)} instances of study {uid}: "
                        + "; ".join(f"{f.sop_instance_uid}: {f.reason}" for f in report.failed)
                    )
            outcomes.append(
                StudyOutcome(
                    uid,
                    StudyStatus.DONE,
                    None,
                    None,
                    pulled_instances,
                    pulled_bytes,
                    tuple(outputs),
                    report,
                    seconds,
                )
            )
            logger.info("Study %s done", uid)
        except DicomWebAuthError:
            raise
        except (CaseError, DicomWebConnectionError, DicomWebServerError) as exc:
            logger.error("Study %s failed: %s", uid, exc)
            outcomes.append(
                StudyOutcome(
                    uid,
                    StudyStatus.FAILED,
                    str(exc),
                    type(exc).__name__,
                    pulled_instances,
                    pulled_bytes,
                    tuple(outputs),
                    report,
                    seconds,
                )
            )
        finally:
            if not keep_pulled and study_cache.exists():
                shutil.rmtree(study_cache, ignore_errors=True)
    own_cache = settings.cache_dir is None
    if not keep_pulled and own_cache and cache.exists() and not any(cache.iterdir()):
        cache.rmdir()
    return DicomWebRunReport(settings=settings, studies=tuple(outcomes))
