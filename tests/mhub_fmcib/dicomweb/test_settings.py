"""Settings, credentials and the HTTP session, without a server."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
import requests
from urllib3.util import Retry

from mhub_fmcib.dicomweb import (
    Credentials,
    DicomWebOptionError,
    DicomWebSettings,
    credentials_from,
    open_client,
)
from mhub_fmcib.dicomweb.selection import check_uid, parse_query, read_studies_file
from mhub_fmcib.dicomweb.session import build_session
from mhub_fmcib.errors import ConfigError

SECRET = "pa:ss-w0rd-QWERTY-4242"
TOKEN = "tok-abcdef-0123456789"


def test_env_credentials() -> None:
    creds = credentials_from({"DICOMWEB_USERNAME": "alice", "DICOMWEB_PASSWORD": SECRET, "OTHER": "x"}, None, None)
    assert (creds.username, creds.password, creds.token, creds.kind) == (
        "alice",
        SECRET,
        None,
        "basic",
    )
    assert credentials_from({}, None, None).kind == "none"


def test_credentials_file_takes_precedence_and_keeps_colons(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    path.write_text(f"# research PACS\n\n  bob:{SECRET}  \n")
    path.chmod(0o600)
    creds = credentials_from({"DICOMWEB_USERNAME": "alice", "DICOMWEB_PASSWORD": "x"}, path, None)
    assert (creds.username, creds.password) == ("bob", SECRET)


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    creds = credentials_from({}, None, path)
    assert (creds.token, creds.kind, creds.username) == (TOKEN, "bearer", None)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("bob\n", "no ':'"), ("a:b\nc:d\n", "found 2 non-empty lines"), ("", "found 0")],
)
def test_bad_credentials_file(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "creds"
    path.write_text(content)
    with pytest.raises(DicomWebOptionError, match=fragment):
        credentials_from({}, path, None)


def test_half_credentials_and_mixed_auth_refused(tmp_path: Path) -> None:
    with pytest.raises(DicomWebOptionError, match="DICOMWEB_PASSWORD") as info:
        credentials_from({"DICOMWEB_USERNAME": "alice"}, None, None)
    assert isinstance(info.value, ConfigError)
    with pytest.raises(DicomWebOptionError, match="choose one"):
        DicomWebSettings("https://pacs.example/dicom-web", "a", SECRET, TOKEN)
    with pytest.raises(DicomWebOptionError, match="not both"):
        credentials_from({}, tmp_path / "c", tmp_path / "t")


def test_world_readable_credentials_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "creds"
    path.write_text(f"bob:{SECRET}\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        credentials_from({}, path, None)
    assert "chmod 600" in caplog.text
    assert SECRET not in caplog.text


def test_repr_str_and_json_hide_secrets() -> None:
    basic = DicomWebSettings("https://pacs.example/dicom-web", "alice", SECRET)
    bearer = DicomWebSettings("https://pacs.example/dicom-web", token=TOKEN)
    texts = [
        repr(basic),
        str(basic),
        repr(bearer),
        repr(Credentials("alice", SECRET)),
        str(Credentials(token=TOKEN)),
        str(basic.to_json()),
        str(bearer.to_json()),
        repr(open_client(basic)),
        repr(build_session(bearer).auth),
    ]
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
    assert "password='***'" in repr(basic)
    assert basic.to_json()["auth"] == "basic"
    assert "alice" not in str(basic.to_json())


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"https://alice:{SECRET}@pacs.example/dicom-web", "must not hold a user name"),
        ("ftp://pacs.example/dicom-web", "not an http"),
        ("https:///dicom-web", "not an http"),
        ("https://pacs.example/dicom-web?x=1", "query or fragment"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(DicomWebOptionError, match=fragment) as info:
        DicomWebSettings(url)
    assert SECRET not in str(info.value)


def test_other_option_checks(tmp_path: Path) -> None:
    with pytest.raises(DicomWebOptionError, match="does not exist"):
        DicomWebSettings("https://p.example/dw", ca_bundle=tmp_path / "missing.pem")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(DicomWebOptionError, match="verification is off"):
        DicomWebSettings("https://p.example/dw", ca_bundle=bundle, verify_tls=False)
    with pytest.raises(DicomWebOptionError, match="--cache-limit-mb"):
        DicomWebSettings("https://p.example/dw", cache_limit_bytes=0)
    with pytest.raises(DicomWebOptionError, match="timeout_s"):
        DicomWebSettings("https://p.example/dw", timeout_s=0)


def test_session_auth_tls_and_retry(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = DicomWebSettings("https://p.example/dw", "alice", SECRET, ca_bundle=bundle, retries=4, backoff_s=0.5)
    session = build_session(settings)
    prepared = session.prepare_request(requests.Request("GET", "https://p.example/dw/studies"))
    expected = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert prepared.headers["Authorization"] == f"Basic {expected}"
    assert session.verify == str(bundle)
    retry = session.get_adapter("https://p.example").max_retries
    assert isinstance(retry, Retry)
    assert (retry.total, retry.connect, retry.backoff_factor) == (4, 4, 0.5)
    assert set(retry.status_forcelist or ()) == {429, 500, 502, 503, 504}
    assert retry.respect_retry_after_header
    bearer = build_session(DicomWebSettings("https://p.example/dw", token=TOKEN))
    prepared = bearer.prepare_request(requests.Request("GET", "https://p.example/dw/studies"))
    assert prepared.headers["Authorization"] == f"Bearer {TOKEN}"
    assert build_session(DicomWebSettings("https://p.example/dw", verify_tls=False)).verify is False


def test_uid_query_and_studies_file(tmp_path: Path) -> None:
    assert check_uid(" 1.2.840.113619.2.55 ") == "1.2.840.113619.2.55"
    for bad in ("1.02.3", "1..2", "abc", "1." + "1" * 70):
        with pytest.raises(DicomWebOptionError):
            check_uid(bad)
    assert parse_query("PatientID=LUNG1-001") == ("PatientID", "LUNG1-001")
    assert parse_query("00100020 = X") == ("00100020", "X")
    for bad in ("PatientID", "NoSuchKeyword=1", "PatientID="):
        with pytest.raises(DicomWebOptionError, match="KEY=VALUE"):
            parse_query(bad)
    path = tmp_path / "studies.txt"
    path.write_text("# two studies\n1.2.3\n\n1.2.4  # second\n")
    assert read_studies_file(path) == ["1.2.3", "1.2.4"]
    path.write_text("1.2.3\nnot-a-uid\n")
    with pytest.raises(DicomWebOptionError, match="line 2"):
        read_studies_file(path)
