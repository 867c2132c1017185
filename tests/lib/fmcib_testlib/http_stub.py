"""A minimal QIDO-RS answer for loopback HTTP(S) test servers (not a mock of our code:
our real client talks to a real socket)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

STUDY_UID = "1.2.3.4"


def send_one_study(handler: BaseHTTPRequestHandler) -> None:
    """Answer 200 with a DICOM JSON list holding one study (StudyInstanceUID 1.2.3.4)."""
    body = json.dumps([{"0020000D": {"vr": "UI", "Value": [STUDY_UID]}}]).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/dicom+json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
