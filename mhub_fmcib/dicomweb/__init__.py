"""DICOMweb: pull studies from a PACS (QIDO-RS, WADO-RS), push results back (STOW-RS).

Needs the ``dicomweb`` extra (``dicomweb-client``, ``requests``). See ``docs/dicomweb.md``.
"""

from mhub_fmcib.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebCacheLimitError,
    DicomWebConnectionError,
    DicomWebDeadlineError,
    DicomWebError,
    DicomWebInterruptedError,
    DicomWebNotFoundError,
    DicomWebNothingToProcessError,
    DicomWebOptionError,
    DicomWebServerError,
    DicomWebStoreError,
    DicomWebStudyError,
)
from mhub_fmcib.dicomweb.pull import PulledStudy, pull_study
from mhub_fmcib.dicomweb.run import (
    DicomWebRunReport,
    ProcessFolder,
    StudyOutcome,
    StudyStatus,
    run_dicomweb,
)
from mhub_fmcib.dicomweb.selection import (
    CtSeriesPlan,
    SegmentationRef,
    StudyPlan,
    plan_study,
    select_studies,
)
from mhub_fmcib.dicomweb.session import DicomWebClient, open_client
from mhub_fmcib.dicomweb.settings import Credentials, DicomWebSettings, credentials_from
from mhub_fmcib.dicomweb.store import StoreFailure, StoreReport, store_instances

__all__ = [
    "Credentials",
    "CtSeriesPlan",
    "DicomWebAuthError",
    "DicomWebCacheLimitError",
    "DicomWebClient",
    "DicomWebConnectionError",
    "DicomWebDeadlineError",
    "DicomWebError",
    "DicomWebInterruptedError",
    "DicomWebNotFoundError",
    "DicomWebNothingToProcessError",
    "DicomWebOptionError",
    "DicomWebRunReport",
    "DicomWebServerError",
    "DicomWebSettings",
    "DicomWebStoreError",
    "DicomWebStudyError",
    "ProcessFolder",
    "PulledStudy",
    "SegmentationRef",
    "StoreFailure",
    "StoreReport",
    "StudyOutcome",
    "StudyPlan",
    "StudyStatus",
    "credentials_from",
    "open_client",
    "plan_study",
    "pull_study",
    "run_dicomweb",
    "select_studies",
    "store_instances",
]
