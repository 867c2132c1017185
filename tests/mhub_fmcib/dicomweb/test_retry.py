"""Retries on 429/503 with Retry-After, against a real (stdlib) HTTP server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from fmcib_testlib.http_stub import send_one_study

from mhub_fmcib.dicomweb import DicomWebServerError, DicomWebSettings, open_client
from mhub_fmcib.dicomweb.selection import select_studies


class _Handler(BaseHTTPRequestHandler):
    """Answers the first ``fail`` requests with ``status`` + Retry-After: 1, then a study."""

    fail = 0
    status = 503
    calls: ClassVar[list[float]] = []

    def do_GET(self) -> None:
        type(self).calls.append(time.monotonic())
        if len(self.calls) <= self.fail:
            self.send_response(self.status)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        send_one_study(self)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def flaky_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


def _settings(server: ThreadingHTTPServer, retries: int) -> DicomWebSettings:
    return DicomWebSettings(
        f"http://127.0.0.1:{server.server_address[1]}/dicom-web",
        retries=retries,
        backoff_s=0.01,
        timeout_s=5,
    )


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_respected_then_succeeds(
    flaky_server: tuple[ThreadingHTTPServer, type[_Handler]], status: int
) -> None:
    server, handler = flaky_server
    handler.fail, handler.status = 2, status
    client = open_client(_settings(server, retries=3))
    assert select_studies(client, [], None, ["PatientID=X"]) == ["1.2.3.4"]
    assert len(handler.calls) == 3
    gaps = [b - a for a, b in zip(handler.calls, handler.calls[1:], strict=False)]
    assert min(gaps) >= 0.9  # Retry-After: 1 beats the 0.01 s back-off


def test_gives_up_after_retries_with_status_in_message(
    flaky_server: tuple[ThreadingHTTPServer, type[_Handler]],
) -> None:
    server, handler = flaky_server
    handler.fail, handler.status = 100, 503
    client = open_client(_settings(server, retries=1))
    with pytest.raises(DicomWebServerError, match=r"HTTP 503 .* after 2 attempts \(1 retry\)"):
        select_studies(client, [], None, ["PatientID=X"])
    assert len(handler.calls) == 2
