"""One DICOMweb run: select studies, then per study plan → pull → process → (store).

A failing study (unknown UID, nothing to process, transfer failure, an answer that is not
DICOMweb, the per-study deadline passed, cache full, processing or store failure: any
:class:`~mhub_fmcib.errors.CaseError` or DICOMweb error other than authentication) is
recorded in its :class:`StudyOutcome` and the run goes on with the next study. Bad
credentials stop the run: no other study could succeed.

A stop request (``should_stop`` returns True, e.g. after SIGTERM) ends the run after the
study in flight: a pull in flight is abandoned and its folder removed, a study whose
processing was under way is not stored; it is recorded as ``interrupted`` and the studies
not started are listed. Without ``keep_pulled`` the cache holds only the study in flight, so
anything found in it at the start was left by a killed run: studies selected again are
resumed (:func:`~mhub_fmcib.dicomweb.pull.pull_study`), others are removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mhub_fmcib.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebConnectionError,
    DicomWebInterruptedError,
    DicomWebServerError,
    DicomWebStoreError,
)
from mhub_fmcib.dicomweb.pull import PulledStudy, pull_study
from mhub_fmcib.dicomweb.selection import is_uid, plan_study, select_studies
from mhub_fmcib.dicomweb.session import DicomWebClient, open_client
from mhub_fmcib.dicomweb.settings import DicomWebSettings
from mhub_fmcib.dicomweb.store import StoreReport, store_instances
from mhub_fmcib.errors import CaseError

logger = logging.getLogger(__name__)

#: ``process_folder(input_folder, output_folder)`` → the DICOM files it wrote (SR, SEG).
ProcessFolder = Callable[[Path, Path], list[Path]]
#: ``should_stop()`` → True once a stop was requested (SIGINT/SIGTERM).
StopCheck = Callable[[], bool]
CACHE_FOLDER_NAME = ".dicomweb-cache"


class StudyStatus(StrEnum):
    """Outcome of one study."""

    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class StudyOutcome:
    """What happened to one study.

    Attributes:
        study_uid: StudyInstanceUID.
        status: done, failed, or interrupted (a stop request came while it was in flight).
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
    """All studies of a run, in order.

    Attributes:
        settings: the server.
        studies: the studies attempted, in order.
        interrupted: a stop request ended the run early.
        not_started: selected studies not attempted because of the stop.
    """

    settings: DicomWebSettings
    studies: tuple[StudyOutcome, ...]
    interrupted: bool = False
    not_started: tuple[str, ...] = ()

    @property
    def n_failed(self) -> int:
        """How many studies failed."""
        return sum(s.status is StudyStatus.FAILED for s in self.studies)

    @property
    def ok(self) -> bool:
        """True when every selected study is done."""
        return self.n_failed == 0 and not self.interrupted

    def to_json(self) -> dict[str, object]:
        """JSON-ready summary for ``dicomweb.json``; holds no credentials."""
        return {
            "server": self.settings.to_json(),
            "studies": [s.to_json() for s in self.studies],
            "interrupted": self.interrupted,
            "not_started": list(self.not_started),
        }


@dataclass(frozen=True)
class _StudyJob:
    """What every study of a run shares."""

    client: DicomWebClient
    cache: Path
    output: Path
    process_folder: ProcessFolder
    store: bool
    include_unsegmented: bool
    keep_pulled: bool
    on_instance: Callable[[Path], None] | None
    should_stop: StopCheck


class _StudyRecord:
    """What one study has done so far (filled in step by step, then frozen into an outcome)."""

    def __init__(self, study_uid: str) -> None:
        self.study_uid = study_uid
        self.pulled_instances = 0
        self.pulled_bytes = 0
        self.outputs: tuple[Path, ...] = ()
        self.store: StoreReport | None = None
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = time.perf_counter() - started

    def outcome(self, status: StudyStatus, exc: BaseException | None = None) -> StudyOutcome:
        return StudyOutcome(
            self.study_uid,
            status,
            None if exc is None else str(exc),
            None if exc is None else type(exc).__name__,
            self.pulled_instances,
            self.pulled_bytes,
            self.outputs,
            self.store,
            dict(self.seconds),
        )


def _never_stop() -> bool:
    return False


def _discard_leftovers(cache: Path, selected: Sequence[str]) -> None:
    """Remove study folders a killed run left in the cache that this run will not resume."""
    if not cache.is_dir():
        return
    keep = set(selected)
    for child in sorted(cache.iterdir()):
        if child.is_dir() and is_uid(child.name) and child.name not in keep:
            logger.warning(
                "Removing study %s's files left in the DICOMweb cache %s by an interrupted run", child.name, cache
            )
            shutil.rmtree(child, ignore_errors=True)


def _pull_step(job: _StudyJob, uid: str, record: _StudyRecord) -> PulledStudy:
    """Plan and pull one study within the per-study deadline."""
    client = job.client
    with record.timed("pull"), client.monitor.deadline(client.settings.study_timeout_s):
        plan = plan_study(client, uid)
        pulled = pull_study(
            client,
            plan,
            job.cache / uid,
            include_unsegmented=job.include_unsegmented,
            cache_root=job.cache,
            on_instance=job.on_instance,
            should_stop=job.should_stop,
        )
    record.pulled_instances, record.pulled_bytes = len(pulled.files), pulled.bytes
    return pulled


def _process_step(job: _StudyJob, pulled: PulledStudy, record: _StudyRecord) -> None:
    study_output = job.output / pulled.study_uid
    study_output.mkdir(parents=True, exist_ok=True)
    with record.timed("process"):
        record.outputs = tuple(job.process_folder(pulled.folder, study_output))
    if job.should_stop():
        raise DicomWebInterruptedError(f"Stop requested while processing study {pulled.study_uid}; not stored")


def _store_step(job: _StudyJob, record: _StudyRecord) -> None:
    client = job.client
    with record.timed("store"), client.monitor.deadline(client.settings.study_timeout_s):
        report = store_instances(client, record.outputs)
    record.store = report
    if not report.ok:
        raise DicomWebStoreError(
            f"STOW-RS stored {len(report.stored)} of "
            f"{len(report.stored) + len(report.failed)} instances of study {record.study_uid}: "
            + "; ".join(f"{f.sop_instance_uid}: {f.reason}" for f in report.failed)
        )


def _run_study(job: _StudyJob, uid: str) -> StudyOutcome:
    """Plan → pull → process → (store) one study; its failures become its outcome."""
    record = _StudyRecord(uid)
    try:
        pulled = _pull_step(job, uid, record)
        _process_step(job, pulled, record)
        if job.store:
            _store_step(job, record)
    except DicomWebInterruptedError as exc:
        logger.warning("Study %s interrupted: %s", uid, exc)
        return record.outcome(StudyStatus.INTERRUPTED, exc)
    except DicomWebAuthError:
        raise
    except (CaseError, DicomWebConnectionError, DicomWebServerError) as exc:
        logger.error("Study %s failed: %s", uid, exc)
        return record.outcome(StudyStatus.FAILED, exc)
    finally:
        if not job.keep_pulled and (job.cache / uid).exists():
            shutil.rmtree(job.cache / uid, ignore_errors=True)
    logger.info("Study %s done", uid)
    return record.outcome(StudyStatus.DONE)


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
    should_stop: StopCheck | None = None,
) -> DicomWebRunReport:
    """Pull, process and optionally store every selected study.

    Args:
        settings: the server; ``settings.study_timeout_s`` bounds each study's transfers.
        study_uids, studies_file, queries: the selection, see
            :func:`mhub_fmcib.dicomweb.select_studies`.
        output: output folder; study ``UID`` is processed into ``output/UID``.
        process_folder: the folder pipeline; returns the DICOM files it wrote.
        store: STOW-RS the returned files back to the server.
        include_unsegmented: pull CT series without SEG/RTSTRUCT too (seeds given).
        keep_pulled: keep the pulled studies in the cache after processing; by default
            each is removed once processed, so the cache holds one study at a time.
        on_instance: called with each pulled file's path (progress).
        should_stop: True once a stop was requested; checked before every instance and
            socket read, and between studies (see the module docstring).

    Raises:
        DicomWebOptionError: bad selection. DicomWebAuthError: credentials refused.
        DicomWebConnectionError, DicomWebServerError: the study selection itself failed.
    """
    stop = should_stop if should_stop is not None else _never_stop
    client = open_client(settings)
    client.monitor.should_stop = stop
    uids = select_studies(client, study_uids, studies_file, queries)
    cache = settings.cache_dir if settings.cache_dir is not None else output / CACHE_FOLDER_NAME
    output.mkdir(parents=True, exist_ok=True)
    if not keep_pulled:
        _discard_leftovers(cache, uids)
    job = _StudyJob(client, cache, output, process_folder, store, include_unsegmented, keep_pulled, on_instance, stop)
    outcomes: list[StudyOutcome] = []
    for uid in uids:
        if stop():
            break
        outcomes.append(_run_study(job, uid))
        if outcomes[-1].status is StudyStatus.INTERRUPTED:
            break
    not_started = tuple(uids[len(outcomes) :])
    own_cache = settings.cache_dir is None or settings.cache_dir == output / CACHE_FOLDER_NAME
    if not keep_pulled and own_cache and cache.exists() and not any(cache.iterdir()):
        cache.rmdir()
    interrupted = bool(not_started) or any(o.status is StudyStatus.INTERRUPTED for o in outcomes)
    return DicomWebRunReport(settings, tuple(outcomes), interrupted=interrupted, not_started=not_started)
