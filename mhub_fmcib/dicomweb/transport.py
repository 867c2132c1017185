"""The HTTP transport under the DICOMweb session: attempt counting, a wall-clock deadline, stop.

``requests`` timeouts bound each socket operation (connect, and the wait for the next bytes),
not a whole transfer: a server that trickles one byte every two seconds never trips them. A
:class:`TransferMonitor` therefore sits at the socket: every ``recv`` first checks the
deadline of the study in flight (and a stop request) and is itself bounded by what is left of
that deadline. The same monitor counts the HTTP attempts of each request (retries included),
so that messages say how many requests were really made, and caps urllib3's waits between
retries (``Retry-After``) at the deadline.

Wiring: :class:`MonitoredAdapter` (a requests adapter) gives its pool manager connection
pools whose connections wrap their socket in :class:`_DeadlineSocket`; the pools count each
attempt. Only public urllib3 hooks are used (``pool_classes_by_scheme``, ``ConnectionCls``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import Retry


class DeadlineExceeded(Exception):
    """The wall-clock deadline of the transfers in flight has passed.

    Deliberately not an :class:`OSError`: urllib3 neither retries nor rewraps it, so it
    reaches :func:`mhub_fmcib.dicomweb.session.translated_errors` as it is.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"deadline of {seconds:g} s passed")
        self.seconds = seconds


class TransferStopped(Exception):
    """A stop was requested (SIGINT/SIGTERM) while a transfer was in flight."""


class TransferMonitor:
    """Per-session transfer state (mutable, one request at a time).

    Attributes:
        attempts: HTTP attempts (first try plus retries) of the latest request.
        last_status: HTTP status of the latest response, None before any.
        last_content_type: its ``Content-Type`` header ('' when absent).
        should_stop: called before every socket read; True aborts the transfer with
            :class:`TransferStopped`.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self.last_status: int | None = None
        self.last_content_type: str | None = None
        self.should_stop: Callable[[], bool] | None = None
        self._deadline: float | None = None
        self._deadline_s = 0.0

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """Within the block every transfer must end ``seconds`` (wall clock) after its start.

        None: no deadline. Blocks do not nest: the inner one replaces the outer one.
        """
        previous = self._deadline, self._deadline_s
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._deadline_s = 0.0 if seconds is None else seconds
        try:
            yield
        finally:
            self._deadline, self._deadline_s = previous

    @property
    def deadline_s(self) -> float | None:
        """Length in seconds of the deadline in force, None without one."""
        return None if self._deadline is None else self._deadline_s

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be <= 0), None without a deadline."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    def check(self) -> None:
        """Raise :class:`TransferStopped` or :class:`DeadlineExceeded` if it is time to end."""
        if self.should_stop is not None and self.should_stop():
            raise TransferStopped("stop requested")
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(self._deadline_s)

    def begin_request(self) -> None:
        """A new request starts: its attempts are counted from zero."""
        self.attempts = 0
        self.last_status = None
        self.last_content_type = None

    def count_attempt(self) -> None:
        """One HTTP attempt is about to be made (checks the deadline first)."""
        self.check()
        self.attempts += 1

    def record_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """requests ``response`` hook: remember the status and media type of the answer."""
        self.last_status = response.status_code
        self.last_content_type = response.headers.get("Content-Type", "")


class _DeadlineSocket:
    """A socket whose reads honour the monitor: deadline, stop, and read timeout left.

    Everything but reading, timeouts, ``makefile`` and closing is passed to the socket.
    Closing follows :class:`socket.socket`: while a file made by :meth:`makefile` is open
    (http.client hands the connection to its response that way) the socket stays open.
    """

    def __init__(self, sock: socket.socket, monitor: TransferMonitor) -> None:
        self._sock = sock
        self._monitor = monitor
        self._timeout = sock.gettimeout()
        self._io_refs = 0
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def _arm(self) -> None:
        self._monitor.check()
        remaining = self._monitor.remaining()
        if remaining is not None:
            self._sock.settimeout(remaining if self._timeout is None else min(self._timeout, remaining))

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        try:
            return self._sock.recv_into(buffer, nbytes, flags)
        except TimeoutError:
            self._monitor.check()  # the deadline, not the read timeout, ended the wait
            raise

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        try:
            return self._sock.recv(bufsize, flags)
        except TimeoutError:
            self._monitor.check()
            raise

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: Any) -> Any:
        return socket.socket.makefile(self, mode, buffering, **kwargs)  # type: ignore[call-overload]

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._io_refs <= 0:
            self._sock.close()


class _MonitoredConnectionMixin:
    """Connects within the deadline, then wraps the socket in :class:`_DeadlineSocket`."""

    monitor: TransferMonitor
    sock: Any
    timeout: Any

    def connect(self) -> None:
        self.monitor.check()
        remaining = self.monitor.remaining()
        if remaining is not None and isinstance(self.timeout, int | float) and remaining < self.timeout:
            self.timeout = remaining
        super().connect()  # type: ignore[misc]
        self.sock = _DeadlineSocket(self.sock, self.monitor)


class _CountingPoolMixin:
    """Counts every attempt (urllib3 calls ``urlopen`` again for each retry)."""

    monitor: TransferMonitor

    def urlopen(self, *args: Any, **kwargs: Any) -> Any:
        self.monitor.count_attempt()
        return super().urlopen(*args, **kwargs)  # type: ignore[misc]


def _pool_classes(monitor: TransferMonitor) -> dict[str, type[HTTPConnectionPool]]:
    """Connection-pool classes bound to ``monitor``, by URL scheme."""
    http_conn = type("MonitoredHTTPConnection", (_MonitoredConnectionMixin, HTTPConnection), {"monitor": monitor})
    https_conn = type("MonitoredHTTPSConnection", (_MonitoredConnectionMixin, HTTPSConnection), {"monitor": monitor})
    http_pool = type(
        "MonitoredHTTPConnectionPool",
        (_CountingPoolMixin, HTTPConnectionPool),
        {"monitor": monitor, "ConnectionCls": http_conn},
    )
    https_pool = type(
        "MonitoredHTTPSConnectionPool",
        (_CountingPoolMixin, HTTPSConnectionPool),
        {"monitor": monitor, "ConnectionCls": https_conn},
    )
    return {"http": http_pool, "https": https_pool}


class DeadlineRetry(Retry):
    """urllib3 retries whose waits (back-off, ``Retry-After``) end at the deadline."""

    monitor: TransferMonitor | None = None

    def new(self, **kw: Any) -> DeadlineRetry:
        retry = super().new(**kw)
        retry.monitor = self.monitor
        return retry

    def _capped(self, seconds: float) -> float:
        remaining = None if self.monitor is None else self.monitor.remaining()
        return seconds if remaining is None else max(0.0, min(seconds, remaining))

    def get_backoff_time(self) -> float:
        return self._capped(super().get_backoff_time())

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else self._capped(seconds)


class MonitoredAdapter(HTTPAdapter):
    """A requests adapter whose connections report to ``monitor``."""

    def __init__(self, monitor: TransferMonitor, max_retries: DeadlineRetry) -> None:
        self._monitor = monitor  # before super().__init__, which builds the pool manager
        max_retries.monitor = monitor
        super().__init__(max_retries=max_retries)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._monitor)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self._monitor.begin_request()
        return super().send(request, *args, **kwargs)
