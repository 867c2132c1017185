"""Exceptions of the DICOMweb layer.

None of their messages ever holds a password, token or ``Authorization`` header: they name
the server by scheme, host and port only.

Run-wide problems (bad credentials, bad options) subclass :class:`FmcibError` or
:class:`ConfigError` and stop a run. Problems of one study subclass :class:`CaseError`;
:func:`mhub_fmcib.dicomweb.run_dicomweb` records them and goes on with the next study. A
server that cannot be reached (:class:`DicomWebConnectionError`) or answers with an
error or with something that is not DICOMweb (:class:`DicomWebServerError`) is recorded per
study too, as the server may recover; so is a study whose transfers outlast the deadline
(:class:`DicomWebDeadlineError`). A stop request (SIGINT/SIGTERM) ends the run after the study
in flight (:class:`DicomWebInterruptedError`).
"""

from __future__ import annotations

from mhub_fmcib.errors import CaseError, ConfigError, FmcibError


class DicomWebError(FmcibError):
    """Base class of the errors of talking to a DICOMweb server."""


class DicomWebAuthError(DicomWebError):
    """The server refused the credentials (HTTP 401 or 403)."""


class DicomWebConnectionError(DicomWebError):
    """The server could not be reached (refused, timed out, TLS failure) after all retries."""


class DicomWebServerError(DicomWebError):
    """The server answered with an HTTP error, or with something that is not valid DICOMweb."""


class DicomWebInterruptedError(DicomWebError):
    """A stop was requested (SIGINT/SIGTERM) while a study was being transferred."""


class DicomWebOptionError(ConfigError):
    """A DICOMweb option (URL, credentials, study UID, query) is invalid."""


class DicomWebStudyError(CaseError):
    """A problem confined to one study."""


class DicomWebNotFoundError(DicomWebStudyError):
    """The server has no study with the requested StudyInstanceUID."""


class DicomWebNothingToProcessError(DicomWebStudyError):
    """The study has no CT series, or none with a SEG/RTSTRUCT and no seeds were given."""


class DicomWebCacheLimitError(DicomWebStudyError):
    """Pulling the study would make the on-disk cache larger than its limit."""


class DicomWebDeadlineError(DicomWebStudyError):
    """The transfers of one study took longer than the deadline (``--dicomweb-timeout``)."""


class DicomWebStoreError(DicomWebStudyError):
    """STOW-RS did not store every instance."""
