"""The HTTP session and DICOMweb client, and the translation of HTTP failures into our errors.

Retries are done in one place, by urllib3 (:class:`urllib3.util.Retry` on the session's
adapters): connection errors, read errors, HTTP 429 and 5xx, with exponential back-off and
``Retry-After`` respected. dicomweb-client's own retry loop is switched off so the two do
not multiply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from dicomweb_client import DICOMwebClient
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from mhub_fmcib.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebConnectionError,
    DicomWebNotFoundError,
    DicomWebServerError,
)
from mhub_fmcib.dicomweb.settings import ENV_PASSWORD, ENV_USERNAME, DicomWebSettings

logger = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Longest wait between two retries, seconds (a longer Retry-After is still obeyed).
BACKOFF_MAX_S = 60.0


class _BearerAuth(requests.auth.AuthBase):
    """Adds ``Authorization: Bearer <token>``; its repr does not show the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(token='***')"


def build_session(settings: DicomWebSettings) -> requests.Session:
    """A :class:`requests.Session` with retries, TLS verification and authentication."""
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        backoff_factor=settings.backoff_s,
        backoff_max=BACKOFF_MAX_S,
        status_forcelist=RETRY_STATUSES,
        # STOW-RS POSTs are safe to repeat: our instances have deterministic UIDs.
        allowed_methods=frozenset({"GET", "HEAD", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # no proxy or netrc credentials picked up behind our back
    if settings.ca_bundle is not None:
        session.verify = str(settings.ca_bundle)
    else:
        session.verify = settings.verify_tls
    if settings.token is not None:
        session.auth = _BearerAuth(settings.token)
    elif settings.username is not None and settings.password is not None:
        session.auth = requests.auth.HTTPBasicAuth(settings.username, settings.password)
    return session


class DicomWebClient(DICOMwebClient):
    """A :class:`dicomweb_client.DICOMwebClient` that knows its :class:`DicomWebSettings`."""

    def __init__(self, settings: DicomWebSettings) -> None:
        super().__init__(
            settings.url.rstrip("/"),
            session=build_session(settings),
            timeout=settings.timeout_s,
        )
        self.set_http_retry_params(retry=False)
        self.settings = settings

    def __repr__(self) -> str:
        return f"DicomWebClient({self.settings!r})"


def open_client(settings: DicomWebSettings) -> DicomWebClient:
    """A client for ``settings``; nothing is sent until the first request."""
    return DicomWebClient(settings)


@contextmanager
def translated_errors(settings: DicomWebSettings, action: str, study_uid: str | None = None) -> Iterator[None]:
    """Turn requests' exceptions raised inside the block into our errors.

    Args:
        settings: the connection (for the server name and the retry count).
        action: what was being done, e.g. ``"QIDO-RS search for studies"``.
        study_uid: the study concerned; an HTTP 404 then means that study is unknown.
    """
    server = settings.server
    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        reason = exc.response.reason if exc.response is not None else ""
        if status in (401, 403):
            raise DicomWebAuthError(
                f"The DICOMweb server {server} refused the {settings.auth_kind} credentials "
                f"(HTTP {status} {reason}) during {action}; check {ENV_USERNAME}/"
                f"{ENV_PASSWORD}, the --credentials file or the --token-file, and that "
                "this user may read (and, with --store, write) the studies"
            ) from None
        if status == 404 and study_uid is not None:
            raise DicomWebNotFoundError(
                f"The DICOMweb server {server} has no study with StudyInstanceUID "
                f"{study_uid} (HTTP 404 during {action}); check the UID"
            ) from None
        raise DicomWebServerError(
            f"The DICOMweb server {server} answered HTTP {status} {reason} during {action}"
            + (f" after {settings.retries} retries" if status in RETRY_STATUSES else "")
        ) from None
    except requests.exceptions.SSLError as exc:
        raise DicomWebConnectionError(
            f"TLS verification of the DICOMweb server {server} failed during {action} "
            f"({type(exc).__name__}); give the CA certificates that signed its certificate "
            "with --ca-bundle FILE"
        ) from None
    except requests.Timeout:
        raise DicomWebConnectionError(
            f"The DICOMweb server {server} did not answer within {settings.timeout_s} s "
            f"during {action}, after {settings.retries} retries; raise the timeout or check "
            "the server"
        ) from None
    except requests.RequestException as exc:
        raise DicomWebConnectionError(
            f"Could not reach the DICOMweb server {server} during {action} after "
            f"{settings.retries} retries ({type(exc).__name__}); check the URL and that the "
            "server is running"
        ) from None
