"""Loopback HTTP servers for the DICOMweb tests (not mocks of our code: our real client talks
to a real socket).

* :func:`send_one_study`: a minimal QIDO-RS answer, for the retry and TLS tests.
* :class:`DicomWebStub`: a small DICOMweb origin server (QIDO-RS series/instances, WADO-RS
  series metadata and instances) that serves real DICOM files and misbehaves on request,
  one study at a time (:class:`Fault`): the faults a hostile or broken PACS shows. Faults
  are decided per StudyInstanceUID, so one run can hold good and bad studies.

The stub binds 127.0.0.1 only; the tests that use it still run inside the private network
namespace (``scripts/netns-run.sh``) like the Orthanc tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom

STUDY_UID = "1.2.3.4"
BOUNDARY = "fmcib-stub-boundary"


def send_one_study(handler: BaseHTTPRequestHandler) -> None:
    """Answer 200 with a DICOM JSON list holding one study (StudyInstanceUID 1.2.3.4)."""
    body = json.dumps([{"0020000D": {"vr": "UI", "Value": [STUDY_UID]}}]).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/dicom+json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Fault(Enum):
    """How the stub misbehaves for one study."""

    NONE = "none"
    HTML_WADO = "html_wado"
    """WADO-RS instance answered 200 with ``text/html`` (a login page)."""
    NON_DICOM_PART = "non_dicom_part"
    """A well-formed multipart answer whose ``application/dicom`` part is not DICOM."""
    TRUNCATED_MULTIPART = "truncated_multipart"
    """A multipart body that ends without its closing boundary (Content-Length matches)."""
    CUT_BODY = "cut_body"
    """The connection closes before Content-Length bytes were sent."""
    INVALID_QIDO = "invalid_qido"
    """QIDO-RS series search answers JSON that is not a list of DICOM JSON objects."""
    NON_JSON_QIDO = "non_json_qido"
    """QIDO-RS series search answers 200 ``text/html``."""
    TRICKLE = "trickle"
    """WADO-RS instance answers one byte every ``trickle_s`` seconds."""


#: Instance (1-based, in request order within the study) whose answer is faulty.
FAULTY_INSTANCE = 3


@dataclass
class _Instance:
    study: str
    series: str
    sop: str
    modality: str
    description: str
    path: Path


@dataclass
class DicomWebStub:
    """A DICOMweb server on 127.0.0.1 serving ``files`` under their own UIDs.

    ``alias_studies`` serves the same files again under further StudyInstanceUIDs (the
    faulty studies of a test need a plausible plan, not distinct pixels).

    Attributes:
        faults: StudyInstanceUID → fault.
        trickle_s: seconds between two bytes of a trickled answer.
        pause_at: pause before answering the n-th instance request of the server (1-based),
            until :meth:`release` (or ``pause_timeout_s``): lets a test signal or kill the
            client mid-pull, deterministically.
        requests: every request path, in order.
    """

    files: Sequence[Path]
    alias_studies: Sequence[str] = ()
    faults: dict[str, Fault] = field(default_factory=dict)
    trickle_s: float = 2.0
    pause_at: int | None = None
    pause_timeout_s: float = 60.0
    requests: list[str] = field(default_factory=list)
    _instances: list[_Instance] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _paused: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _served_per_study: dict[str, int] = field(default_factory=dict)
    _instance_requests: int = 0

    def __post_init__(self) -> None:
        for path in self.files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            studies = [str(ds.StudyInstanceUID), *self.alias_studies]
            for study in studies:
                self._instances.append(
                    _Instance(
                        study,
                        str(ds.SeriesInstanceUID),
                        str(ds.SOPInstanceUID),
                        str(ds.Modality),
                        str(ds.get("SeriesDescription", "")),
                        path,
                    )
                )

    # -- life cycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("stub not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/dicom-web"

    @contextmanager
    def running(self) -> Iterator[DicomWebStub]:
        """Serve in a background thread while the block runs."""
        stub = self

        class Handler(_StubHandler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stopping.set()
            self._release.set()
            self._server.shutdown()
            self._server.server_close()

    def wait_paused(self, timeout: float = 60.0) -> bool:
        """Block until the server paused at ``pause_at`` (True) or ``timeout`` passed."""
        return self._paused.wait(timeout)

    def release(self) -> None:
        """Let a paused answer go on."""
        self._release.set()

    def instance_requests(self, study: str | None = None) -> list[str]:
        """Paths of the WADO-RS instance requests (of ``study``)."""
        return [
            p
            for p in self.requests
            if "/instances/" in p and (study is None or f"/studies/{study}/" in p) and "metadata" not in p
        ]

    # -- answers ----------------------------------------------------------------------
    def series_of(self, study: str) -> list[dict[str, Any]]:
        seen: dict[str, _Instance] = {}
        for inst in self._instances:
            if inst.study == study:
                seen.setdefault(inst.series, inst)
        return [
            {
                "0020000D": {"vr": "UI", "Value": [study]},
                "0020000E": {"vr": "UI", "Value": [i.series]},
                "00080060": {"vr": "CS", "Value": [i.modality]},
                "0008103E": {"vr": "LO", "Value": [i.description]},
            }
            for i in seen.values()
        ]

    def instances_of(self, study: str, series: str) -> list[_Instance]:
        return [i for i in self._instances if i.study == study and i.series == series]

    def find(self, study: str, series: str, sop: str) -> _Instance | None:
        for i in self.instances_of(study, series):
            if i.sop == sop:
                return i
        return None

    def next_instance_number(self, study: str) -> int:
        """Count one more instance request (server-wide and for ``study``); maybe pause."""
        with self._lock:
            self._instance_requests += 1
            number = self._instance_requests
            self._served_per_study[study] = self._served_per_study.get(study, 0) + 1
            in_study = self._served_per_study[study]
        if self.pause_at is not None and number == self.pause_at:
            self._paused.set()
            self._release.wait(self.pause_timeout_s)
        return in_study


def _metadata(path: Path) -> dict[str, Any]:
    ds = pydicom.dcmread(path)
    return ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda element: "bulk")


class _StubHandler(BaseHTTPRequestHandler):
    owner: DicomWebStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, status: int, content_type: str, body: bytes, *, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: object) -> None:
        self._send(200, "application/dicom+json", json.dumps(value).encode())

    def do_GET(self) -> None:
        owner = self.owner
        owner.requests.append(self.path)
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts[:2] != ["dicom-web", "studies"] or len(parts) < 4:
            self._send(404, "text/plain", b"not found")
            return
        study = parts[2]
        fault = owner.faults.get(study, Fault.NONE)
        rest = parts[3:]
        if rest == ["series"]:
            self._series(study, fault)
        elif len(rest) == 3 and rest[0] == "series" and rest[2] == "instances":
            self._json([{"00080018": {"vr": "UI", "Value": [i.sop]}} for i in owner.instances_of(study, rest[1])])
        elif len(rest) == 3 and rest[0] == "series" and rest[2] == "metadata":
            self._json([_metadata(i.path) for i in owner.instances_of(study, rest[1])])
        elif len(rest) == 4 and rest[0] == "series" and rest[2] == "instances":
            self._instance(study, rest[1], rest[3], fault)
        else:
            self._send(404, "text/plain", b"not found")

    def _series(self, study: str, fault: Fault) -> None:
        if fault is Fault.INVALID_QIDO:
            self._json({"Status": "busy", "Retry": "later"})
        elif fault is Fault.NON_JSON_QIDO:
            self._send(200, "text/html", b"<html><body>Please log in</body></html>")
        else:
            self._json(self.owner.series_of(study))

    def _instance(self, study: str, series: str, sop: str, fault: Fault) -> None:
        inst = self.owner.find(study, series, sop)
        if inst is None:
            self._send(404, "text/plain", b"no such instance")
            return
        number = self.owner.next_instance_number(study)
        data = inst.path.read_bytes()
        head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        faulty = number == FAULTY_INSTANCE
        if fault is Fault.HTML_WADO and faulty:
            self._send(200, "text/html; charset=utf-8", b"<html><body>Session expired</body></html>")
        elif fault is Fault.NON_DICOM_PART and faulty:
            self._send(200, content_type, head + b"this is not a DICOM file, it is a log line\n" * 20 + tail)
        elif fault is Fault.TRUNCATED_MULTIPART and faulty:
            self._send(200, content_type, head + data[: len(data) // 2])
        elif fault is Fault.CUT_BODY and faulty:
            body = head + data + tail
            self._send(200, content_type, body[: len(body) // 2], length=len(body))
            self.close_connection = True
        elif fault is Fault.TRICKLE:
            self._trickle(content_type, head + data + tail)
        else:
            self._send(200, content_type, head + data + tail)

    def _trickle(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for byte in body:
            if self.owner._stopping.is_set():
                break
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the client gave up
                break
            time.sleep(self.owner.trickle_s)
        self.close_connection = True
