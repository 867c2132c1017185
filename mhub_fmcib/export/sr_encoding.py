"""Byte-exact, fast encoding of the SR's feature measurements (Explicit VR Little Endian).

Each lesion's measurement group holds 4096 NUM content items that differ only in the
feature code and the value. Building 4096 highdicom ``NumContentItem`` objects and letting
pydicom encode them element by element costs about 2 s per lesion on 2 cores, ten times the
encoder's time; this module makes it a few tens of milliseconds:

1. Once per process, on the first SR (``sr.feature_templates``), highdicom builds the NUM
   item of feature 0 and pydicom encodes the parts that do not depend on the value: the
   item's elements before *Measured Value Sequence* (relationship, value type, concept
   name) and the *Measurement Units Code Sequence* (:class:`NumItemTemplate`). The other
   features' items differ only in the concept's Code Value and Code Meaning: their heads
   are feature 0's with those two elements and the two lengths around them replaced
   (:class:`ConceptHeadTemplate`, checked against pydicom's encoding), which takes
   milliseconds instead of the second pydicom takes for 4095 items.
2. Per lesion, :func:`encode_num_items` joins those bytes with the two value elements,
   *Floating Point Value* (FD) and *Numeric Value* (DS, formatted by pydicom's
   ``DS(value, auto_format=True)``, exactly as highdicom's ``NumContentItem`` does), and the
   three lengths that depend on them (PS3.5 7.1.2 and 7.5: explicit VR, defined lengths).
3. The encoded items become the raw value of the group's *Content Sequence*
   (:func:`raw_content_sequence`); pydicom writes raw elements verbatim when the datasets
   that hold them declare their encoding (:func:`declare_explicit_vr_little_endian`).

The result is byte-identical to highdicom + pydicom encoding the same items one by one:
``tests/mhub_fmcib/export/test_sr_encoding.py`` compares the two for random values,
every DS length and the special values, and reads the file back with pydicom and highdicom.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_sequence_item
from pydicom.tag import Tag
from pydicom.valuerep import format_number_as_ds

from ..errors import ExportError

_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item
_MEASURED_VALUE_SEQUENCE = Tag(0x0040, 0xA300)
_UNITS_CODE_SEQUENCE = Tag(0x0040, 0x08EA)
_FLOATING_POINT_VALUE = Tag(0x0040, 0xA161)
_NUMERIC_VALUE = Tag(0x0040, 0xA30A)
_CONTENT_SEQUENCE = Tag(0x0040, 0xA730)
#: (0040,A300) SQ, 2 reserved bytes; the 4-byte length follows.
_MV_SEQUENCE_HEADER = b"\x40\x00\x00\xa3SQ\x00\x00"
#: (0040,A161) FD, length 8.
_FD_HEADER = b"\x40\x00\x61\xa1FD\x08\x00"
#: (0040,A30A) DS; the 2-byte length follows.
_DS_HEADER = b"\x40\x00\x0a\xa3DS"
_NUM_ITEM_KEYS = (Tag(0x0040, 0xA010), Tag(0x0040, 0xA040), Tag(0x0040, 0xA043), _MEASURED_VALUE_SEQUENCE)
#: (0040,A043) Concept Name Code Sequence SQ, 2 reserved bytes; the 4-byte length follows.
_CONCEPT_NAME_HEADER = b"\x40\x00\x43\xa0SQ\x00\x00"
#: (0008,0100) Code Value SH and (0008,0104) Code Meaning LO; the 2-byte length follows.
_CODE_VALUE_HEADER = b"\x08\x00\x00\x01SH"
_CODE_MEANING_HEADER = b"\x08\x00\x04\x01LO"
_MEASURED_VALUE_KEYS = (_UNITS_CODE_SEQUENCE, _FLOATING_POINT_VALUE, _NUMERIC_VALUE)


@dataclass(frozen=True)
class NumItemTemplate:
    """The value-independent bytes of one NUM content item (Explicit VR Little Endian).

    Attributes:
        head: the item's elements before *Measured Value Sequence* (0040,A300): Relationship
            Type, Value Type, Concept Name Code Sequence, as pydicom encodes them.
        units: the *Measurement Units Code Sequence* (0040,08EA) element of the measured value.
    """

    head: bytes
    units: bytes


def encode_elements(ds: pydicom.Dataset) -> bytes:
    """The elements of ``ds`` encoded by pydicom as Explicit VR Little Endian (no item header),
    text in the default character set (the template parts are ASCII)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def encode_items(items: Sequence[pydicom.Dataset], encodings: str | Sequence[str] = default_encoding) -> bytes:
    """``items`` encoded by pydicom as sequence items (Explicit VR Little Endian)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    enc = convert_encodings(list(encodings) if not isinstance(encodings, str) else encodings)
    for item in items:
        write_sequence_item(fp, item, enc)
    return bytes(fp.getvalue())


def template_from_item(item: pydicom.Dataset) -> NumItemTemplate:
    """The :class:`NumItemTemplate` of a highdicom NUM item with a float value and no qualifier.

    Raises:
        ExportError: the item does not have exactly the layout this encoder writes
            (relationship, value type, concept name and one measured value holding units,
            Floating Point Value and Numeric Value), e.g. after a highdicom change.
    """
    keys = tuple(sorted(item.keys()))
    mv_seq = item.get("MeasuredValueSequence")
    mv_keys = tuple(sorted(mv_seq[0].keys())) if mv_seq is not None and len(mv_seq) == 1 else ()
    if (
        keys != _NUM_ITEM_KEYS
        or mv_keys != _MEASURED_VALUE_KEYS
        or item.is_undefined_length_sequence_item
        or item[_MEASURED_VALUE_SEQUENCE].is_undefined_length
        or mv_seq[0].is_undefined_length_sequence_item
    ):
        raise ExportError(
            f"internal error: highdicom's NUM content item has the layout {[str(k) for k in keys]} / "
            f"{[str(k) for k in mv_keys]}, not the one the SR encoder expects; install the highdicom "
            "version pinned in requirements/ or report this"
        )
    units = pydicom.Dataset()
    units[_UNITS_CODE_SEQUENCE] = mv_seq[0][_UNITS_CODE_SEQUENCE]
    return NumItemTemplate(head=num_item_head(item), units=encode_elements(units))


def num_item_head(item: pydicom.Dataset) -> bytes:
    """:attr:`NumItemTemplate.head` of ``item``: its Relationship Type, Value Type and Concept
    Name Code Sequence, encoded by pydicom."""
    head = pydicom.Dataset()
    for key in _NUM_ITEM_KEYS[:-1]:
        head[key] = item[key]
    return encode_elements(head)


def _text_element(header: bytes, text: str) -> bytes:
    """A short-text element (SH, LO) as pydicom encodes it: ASCII value padded with a space
    to an even length after ``header`` (tag and VR) and its 2-byte length."""
    value = text.encode("ascii")
    if len(value) % 2:
        value += b" "
    return header + struct.pack("<H", len(value)) + value


@dataclass(frozen=True)
class ConceptHeadTemplate:
    """:attr:`NumItemTemplate.head` with the concept's Code Value and Code Meaning left open.

    Attributes:
        before: the elements before *Concept Name Code Sequence* (relationship, value type).
        between: the code item's elements between Code Value and Code Meaning (the coding
            scheme designator, ...).
        after: the code item's elements after Code Meaning (none for highdicom's concepts).
    """

    before: bytes
    between: bytes
    after: bytes

    def head(self, code_value: str, code_meaning: str) -> bytes:
        """The encoded head of a NUM item whose concept has this value and meaning (ASCII)."""
        item = (
            _text_element(_CODE_VALUE_HEADER, code_value)
            + self.between
            + _text_element(_CODE_MEANING_HEADER, code_meaning)
            + self.after
        )
        return (
            self.before
            + _CONCEPT_NAME_HEADER
            + struct.pack("<I", len(item) + 8)
            + _ITEM
            + struct.pack("<I", len(item))
            + item
        )


def concept_head_template(item: pydicom.Dataset) -> ConceptHeadTemplate:
    """The :class:`ConceptHeadTemplate` of a highdicom NUM item (with one concept name).

    Raises:
        ExportError: pydicom's encoding of the item's head does not have the layout the
            template fills (e.g. after a pydicom or highdicom change), or the template does
            not reproduce it.
    """
    head = num_item_head(item)
    concept = item.ConceptNameCodeSequence[0]
    before_ds = pydicom.Dataset()
    for key in _NUM_ITEM_KEYS[:2]:
        before_ds[key] = item[key]
    before = encode_elements(before_ds)
    rest = head[len(before) :]
    value = _text_element(_CODE_VALUE_HEADER, str(concept.CodeValue))
    meaning = _text_element(_CODE_MEANING_HEADER, str(concept.CodeMeaning))
    code_item = rest[20:]  # after the sequence header, its length, the item tag and length
    at = code_item.find(meaning)
    if (
        not head.startswith(before)
        or rest[:8] != _CONCEPT_NAME_HEADER
        or rest[12:16] != _ITEM
        or struct.unpack("<I", rest[8:12])[0] != len(code_item) + 8
        or struct.unpack("<I", rest[16:20])[0] != len(code_item)
        or not code_item.startswith(value)
        or at < len(value)
        or code_item.count(meaning) != 1
    ):
        raise ExportError(
            "internal error: pydicom's encoding of a NUM item's concept name does not have the "
            "layout the SR encoder expects; install the pydicom and highdicom versions pinned in "
            "requirements/ or report this"
        )
    template = ConceptHeadTemplate(before, code_item[len(value) : at], code_item[at + len(meaning) :])
    if template.head(str(concept.CodeValue), str(concept.CodeMeaning)) != head:
        raise ExportError("internal error: the SR encoder's concept name template does not reproduce pydicom's bytes")
    return template


def ds_string(value: float) -> bytes:
    """*Numeric Value* of ``value`` as highdicom writes it, padded with a space to an even
    length: highdicom sets ``DS(value, auto_format=True)``, whose string pydicom makes with
    ``format_number_as_ds`` (at most 16 characters)."""
    text = format_number_as_ds(value)
    if len(text) % 2:
        text += " "
    return text.encode("ascii")


def encode_num_items(templates: Sequence[NumItemTemplate], values: np.ndarray) -> bytes:
    """Encoded NUM items (sequence items with defined lengths), one per ``templates[i]`` with
    value ``values[i]``.

    Args:
        templates: value-independent parts, one per item.
        values: shape ``(len(templates),)``; finite numbers, written as FD (float64) and DS.

    Raises:
        ExportError: lengths differ, or a value is not finite.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.shape != (len(templates),):
        raise ExportError(f"internal error: {vals.shape} values for {len(templates)} NUM items")
    if not np.all(np.isfinite(vals)):
        raise ExportError("a measurement value is NaN or infinite; DICOM numeric values must be finite")
    fd_bytes = vals.astype("<f8").tobytes()
    pack = struct.pack
    parts: list[bytes] = []
    for i, (template, value) in enumerate(zip(templates, vals.tolist(), strict=True)):
        ds = ds_string(value)
        mv_item = template.units + _FD_HEADER + fd_bytes[8 * i : 8 * i + 8] + _DS_HEADER + pack("<H", len(ds)) + ds
        mv_sequence = _MV_SEQUENCE_HEADER + pack("<I", len(mv_item) + 8) + _ITEM + pack("<I", len(mv_item)) + mv_item
        parts.append(_ITEM + pack("<I", len(template.head) + len(mv_sequence)) + template.head + mv_sequence)
    return b"".join(parts)


def raw_content_sequence(encoded_items: bytes) -> RawDataElement:
    """A *Content Sequence* (0040,A730) with defined length whose value is ``encoded_items``
    (Explicit VR Little Endian sequence items)."""
    return RawDataElement(
        tag=_CONTENT_SEQUENCE,
        VR="SQ",
        length=len(encoded_items),
        value=encoded_items,
        value_tell=0,
        is_implicit_VR=False,
        is_little_endian=True,
    )


def declare_explicit_vr_little_endian(ds: pydicom.Dataset) -> None:
    """Declare that ``ds`` is encoded as Explicit VR Little Endian in its own character set,
    so that pydicom writes its raw elements verbatim instead of decoding them first
    (``Dataset.set_original_encoding``, meant for this)."""
    charset = ds.get("SpecificCharacterSet")
    encoding = convert_encodings(charset) if charset else default_encoding
    ds.set_original_encoding(False, True, encoding)
