"""A strict reader of ``multipart/related`` bodies (RFC 2046 section 5.1, PS3.18 8.7.3).

dicomweb-client accepts a body that ends before its closing boundary (the last part is then
silently cut short) and turns a non-DICOM part into a pydicom traceback. This reader accepts
only a complete body: a delimiter line first (after an optional preamble), parts separated by
``CRLF--boundary``, and the closing ``--boundary--``. Each error says what was seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message


class MultipartError(ValueError):
    """A ``multipart/related`` body is malformed or truncated."""


@dataclass(frozen=True)
class Part:
    """One body part.

    Attributes:
        content_type: the part's ``Content-Type`` (lower case, no parameters), '' if absent.
        content: its bytes.
    """

    content_type: str
    content: bytes


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"; boundary=x'`` → (media type, parameters)."""
    message = Message()
    message["Content-Type"] = content_type
    params = {str(k).lower(): str(v) for k, v in message.get_params(failobj=[])[1:]}
    return message.get_content_type() if content_type.strip() else "", params


def _part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError(f"a part header line is not NAME: VALUE ({line[:60]!r})")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def _parse_part(raw: bytes) -> Part:
    if raw.startswith(b"\r\n"):  # no headers
        return Part("", raw[2:])
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise MultipartError("a part has no blank line (CRLF CRLF) between its headers and its content")
    headers = _part_headers(raw[:end])
    kind = media_type(headers["content-type"])[0] if "content-type" in headers else ""
    return Part(kind, raw[end + 4 :])


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a complete ``multipart`` body.

    Raises:
        MultipartError: no opening delimiter, a part without header/content separator, or
            the body ends before the closing delimiter (truncated).
    """
    if not boundary:
        raise MultipartError("the Content-Type has no boundary parameter")
    dash = b"--" + boundary.encode("latin-1")
    if body.startswith(dash):
        position = len(dash)
    else:
        opening = body.find(b"\r\n" + dash)
        if opening < 0:
            raise MultipartError(f"the body does not hold the boundary; it starts {body[:60]!r}")
        position = opening + 2 + len(dash)
    delimiter = b"\r\n" + dash
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", position):
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise MultipartError(f"a boundary line is malformed or cut short after {len(parts)} part(s)")
        start = line_end + 2
        end = body.find(delimiter, start)
        if end < 0:
            raise MultipartError(
                f"the body ends after {len(body)} bytes without its closing boundary: "
                f"truncated after {len(parts)} complete part(s)"
            )
        parts.append(_parse_part(body[start:end]))
        position = end + len(delimiter)
