"""The strict multipart/related reader: complete bodies only, and errors that say what was seen."""

from __future__ import annotations

import pytest

from mhub_fmcib.dicomweb.multipart import MultipartError, Part, media_type, split_multipart

B = "b0undary"


def _body(*parts: bytes, close: bool = True, preamble: bytes = b"") -> bytes:
    out = preamble
    for i, part in enumerate(parts):
        out += (b"\r\n" if i or preamble else b"") + f"--{B}\r\n".encode() + part
    return out + (f"\r\n--{B}--\r\n".encode() if close else b"")


def test_media_type_and_boundary() -> None:
    kind, params = media_type('Multipart/Related; type="application/dicom"; boundary="a b"')
    assert kind == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a b"}
    assert media_type("")[0] == ""


def test_parts_with_and_without_headers_and_a_preamble() -> None:
    body = _body(b"Content-Type: application/dicom\r\n\r\nDICM-1", b"\r\nraw", preamble=b"ignored")
    assert split_multipart(body, B) == [Part("application/dicom", b"DICM-1"), Part("", b"raw")]


def test_content_holding_crlf_and_dashes_is_kept_whole() -> None:
    content = b"a\r\n--not-the-boundary\r\nb"
    assert split_multipart(_body(b"\r\n" + content), B) == [Part("", content)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_body(b"\r\nhalf", close=False), "without its closing boundary: truncated after 0 complete part"),
        (b"<html>login</html>", "does not hold the boundary; it starts b'<html>"),
        (_body(b"Content-Type application/dicom\r\n\r\nx"), "not NAME: VALUE"),
        (_body(b"Content-Type: application/dicom"), "no blank line"),
    ],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message.replace("(", r"\(")):
        split_multipart(body, B)


def test_no_boundary_parameter() -> None:
    with pytest.raises(MultipartError, match="no boundary"):
        split_multipart(b"x", "")
