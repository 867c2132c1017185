"""The HTTP session and DICOMweb client, and the translation of HTTP failures into our errors.

Retries are done in one place, by urllib3 (:class:`urllib3.util.Retry` on the session's
adapters): connection errors, read errors, HTTP 429 and 5xx, with exponential back-off and
``Retry-After`` respected. dicomweb-client's own retry loop is switched off so the two do
not multiply. The session's transport (:mod:`mhub_fmcib.dicomweb.transport`) counts the
attempts each request really took, so messages say "after 3 attempts" only when three were
made, and enforces the per-study deadline (:attr:`DicomWebSettings.study_timeout_s`).

Every failure of a request, and every answer that is not what DICOMweb prescribes (a wrong
media type, a body that is not JSON, a truncated answer), becomes one of our errors whose
message names the server, the action, and what the server sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from dicomweb_client import DICOMwebClient

from mhub_fmcib.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebConnectionError,
    DicomWebDeadlineError,
    DicomWebInterruptedError,
    DicomWebNotFoundError,
    DicomWebServerError,
)
from mhub_fmcib.dicomweb.settings import DEADLINE_OPTION, ENV_PASSWORD, ENV_USERNAME, DicomWebSettings
from mhub_fmcib.dicomweb.transport import (
    DeadlineExceeded,
    DeadlineRetry,
    MonitoredAdapter,
    TransferMonitor,
    TransferStopped,
)

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


def build_session(settings: DicomWebSettings, monitor: TransferMonitor | None = None) -> requests.Session:
    """A :class:`requests.Session` with retries, TLS verification and authentication.

    Its transport reports every attempt and response to ``monitor`` (a new one if None) and
    honours its deadline.
    """
    monitor = monitor if monitor is not None else TransferMonitor()
    retry = DeadlineRetry(
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
    adapter = MonitoredAdapter(monitor, max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.hooks["response"].append(monitor.record_response)
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
    """A :class:`dicomweb_client.DICOMwebClient` that knows its :class:`DicomWebSettings`.

    Attributes:
        settings: the connection.
        monitor: attempt counts, last answer, deadline and stop of its transfers.
        http: its :class:`requests.Session` (for the requests dicomweb-client does not parse
            strictly enough, see :func:`mhub_fmcib.dicomweb.pull.retrieve_instance_bytes`).
    """

    def __init__(self, settings: DicomWebSettings) -> None:
        self.monitor = TransferMonitor()
        self.http = build_session(settings, self.monitor)
        super().__init__(settings.url.rstrip("/"), session=self.http, timeout=settings.timeout_s)
        self.set_http_retry_params(retry=False)
        self.settings = settings

    def __repr__(self) -> str:
        return f"DicomWebClient({self.settings!r})"


def open_client(settings: DicomWebSettings) -> DicomWebClient:
    """A client for ``settings``; nothing is sent until the first request."""
    return DicomWebClient(settings)


def attempts_text(attempts: int) -> str:
    """``'after 3 attempts (2 retries)'``, ``'on the first attempt (not retried)'``."""
    if attempts <= 1:
        return "on the first attempt (not retried)"
    retries = attempts - 1
    return f"after {attempts} attempts ({retries} {'retry' if retries == 1 else 'retries'})"


def body_excerpt(body: bytes | str, limit: int = 60) -> str:
    """The start of a body, escaped (``repr``): safe to log, shows what the server sent."""
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    head = body[:limit]
    return repr(head) + ("..." if len(body) > limit else "")


def _answer(monitor: TransferMonitor) -> str:
    if monitor.last_status is None:
        return "no answer"
    media = monitor.last_content_type or "no Content-Type"
    return f"HTTP {monitor.last_status}, Content-Type {media!r}"


def _http_error(client: DicomWebClient, exc: requests.HTTPError, action: str, study_uid: str | None) -> Exception:
    settings, server = client.settings, client.settings.server
    status = exc.response.status_code if exc.response is not None else None
    reason = exc.response.reason if exc.response is not None else ""
    if status in (401, 403):
        return DicomWebAuthError(
            f"The DICOMweb server {server} refused the {settings.auth_kind} credentials "
            f"(HTTP {status} {reason}) during {action}; check {ENV_USERNAME}/"
            f"{ENV_PASSWORD}, the --credentials file or the --token-file, and that "
            "this user may read (and, with --store, write) the studies"
        )
    if status == 404 and study_uid is not None:
        return DicomWebNotFoundError(
            f"The DICOMweb server {server} has no study with StudyInstanceUID "
            f"{study_uid} (HTTP 404 during {action}); check the UID"
        )
    retried = f" {attempts_text(client.monitor.attempts)}" if status in RETRY_STATUSES else ""
    return DicomWebServerError(f"The DICOMweb server {server} answered HTTP {status} {reason} during {action}{retried}")


def _deadline_error(client: DicomWebClient, action: str, study_uid: str | None) -> DicomWebDeadlineError:
    seconds = client.monitor.deadline_s
    limit = f"{seconds:g} s" if seconds is not None else "its limit"
    what = f"the transfers of study {study_uid}" if study_uid is not None else "the transfers"
    return DicomWebDeadlineError(
        f"The DICOMweb server {client.settings.server} did not complete {what} within the "
        f"deadline of {limit} ({DEADLINE_OPTION}); stopped during {action} "
        f"(last answer: {_answer(client.monitor)}); the server may be overloaded or "
        "sending very slowly"
    )


@contextmanager
def translated_errors(client: DicomWebClient, action: str, study_uid: str | None = None) -> Iterator[None]:
    """Turn requests' exceptions (and malformed answers) raised inside the block into our errors.

    Args:
        client: the connection (server name, attempt count, last answer).
        action: what was being done, e.g. ``"QIDO-RS search for studies"``.
        study_uid: the study concerned; an HTTP 404 then means that study is unknown.
    """
    settings, monitor = client.settings, client.monitor
    server = settings.server
    try:
        yield
    except requests.HTTPError as exc:
        raise _http_error(client, exc, action, study_uid) from None
    except DeadlineExceeded:
        raise _deadline_error(client, action, study_uid) from None
    except TransferStopped:
        raise DicomWebInterruptedError(f"Stop requested during {action}") from None
    except requests.JSONDecodeError as exc:
        raise DicomWebServerError(
            f"The DICOMweb server {server} answered {action} with a body that is not JSON "
            f"({_answer(monitor)}; it starts {body_excerpt(exc.doc)})"
        ) from None
    except requests.exceptions.SSLError as exc:
        raise DicomWebConnectionError(
            f"TLS verification of the DICOMweb server {server} failed during {action} "
            f"({type(exc).__name__}); give the CA certificates that signed its certificate "
            "with --ca-bundle FILE"
        ) from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise DicomWebServerError(
            f"The DICOMweb server {server} broke off its answer to {action} ({_answer(monitor)}; "
            f"{type(exc).__name__}: the body is truncated or malformed), {attempts_text(monitor.attempts)}"
        ) from None
    except requests.Timeout:
        raise DicomWebConnectionError(
            f"The DICOMweb server {server} did not answer within {settings.timeout_s:g} s "
            f"during {action}, {attempts_text(monitor.attempts)}; raise the timeout or check the server"
        ) from None
    except requests.RequestException as exc:
        raise DicomWebConnectionError(
            f"Could not reach the DICOMweb server {server} during {action} "
            f"{attempts_text(monitor.attempts)} ({type(exc).__name__}); check the URL and that the "
            "server is running"
        ) from None
    except ValueError as exc:
        # dicomweb-client reports an answer it cannot parse (wrong media type, a multipart
        # body without CRLF CRLF, ...) as ValueError; the arguments we pass are checked.
        raise DicomWebServerError(
            f"The DICOMweb server {server} sent an answer to {action} that is not valid "
            f"DICOMweb ({_answer(monitor)}): {exc}"
        ) from None
