"""TLS against a real HTTPS server on loopback with a certificate from a test CA (made with
openssl): verification is on by default and fails clearly; --ca-bundle makes it pass; a
bearer token from --token-file reaches the server."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from fmcib_testlib.http_stub import send_one_study

from mhub_fmcib.dicomweb import DicomWebSettings, open_client
from mhub_fmcib.dicomweb.errors import DicomWebConnectionError
from mhub_fmcib.dicomweb.selection import select_studies
from mhub_fmcib.dicomweb.settings import credentials_from


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=mhub-fmcib test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


class _Handler(BaseHTTPRequestHandler):
    auth: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).auth.append(self.headers.get("Authorization", ""))
        send_one_study(self)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def https_server(pki: Path) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", handler
    finally:
        server.shutdown()
        server.server_close()


def test_verification_on_by_default_and_ca_bundle(
    https_server: tuple[str, type[_Handler]], pki: Path, tmp_path: Path
) -> None:
    url, handler = https_server
    plain = DicomWebSettings(url, retries=0, backoff_s=0.01, timeout_s=5)
    assert plain.verify_tls is True
    with pytest.raises(DicomWebConnectionError, match=r"TLS verification .*--ca-bundle"):
        select_studies(open_client(plain), [], None, ["PatientID=X"])
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    creds = credentials_from({}, None, token_file)
    settings = DicomWebSettings.with_credentials(url, creds, ca_bundle=pki / "ca.pem", retries=0, timeout_s=5)
    assert select_studies(open_client(settings), [], None, ["PatientID=X"]) == ["1.2.3.4"]
    assert handler.auth[-1] == "Bearer s3cret-token"
    assert "s3cret-token" not in repr(settings) and "s3cret-token" not in json.dumps(settings.to_json())
