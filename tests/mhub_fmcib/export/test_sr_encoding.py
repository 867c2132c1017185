"""The SR's fast feature encoding is byte-identical to highdicom + pydicom item by item."""

from __future__ import annotations

import copy
import struct
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from mhub_fmcib.export import ExportError, build_feature_sr, write_sr
from mhub_fmcib.export.sr import UNIT_NONE, feature_concept, feature_templates
from mhub_fmcib.export.sr_encoding import (
    concept_head_template,
    ds_string,
    encode_items,
    encode_num_items,
    raw_content_sequence,
    template_from_item,
)
from mhub_fmcib.provenance import Provenance
from mhub_fmcib.records import N_FEATURES, SeedPoint

NODULE = SeedPoint(-21.858572, -120.535814, -611.496416)  # sample_data/README.md

#: Values whose DS strings have every length from 1 to 16 characters, signs, exponents,
#: float32 extremes, a subnormal and zero of both signs.
SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    7.0,
    12.0,
    0.5,
    -0.25,
    1e-7,
    -3.4028234663852886e38,
    3.4028234663852886e38,
    1.401298464324817e-45,
    1.1754943508222875e-38,
    123456.0,
    -9.87654321,
    float(np.float32(0.1)),
    float(np.float32(-2.0 / 3.0)),
    1e16,
    -1e-16,
    2.5e-5,
]


def _reference_items(values: list[float]) -> list[pydicom.Dataset]:
    """The NUM items highdicom builds for feature i with value values[i]."""
    return [hd.sr.Measurement(name=feature_concept(i), value=float(v), unit=UNIT_NONE)[0] for i, v in enumerate(values)]


def test_num_items_equal_pydicom_encoding_of_highdicom_items() -> None:
    rng = np.random.default_rng(11)
    randoms = (rng.standard_normal(300) * 10.0 ** rng.integers(-12, 12, 300)).astype(np.float32).tolist()
    values = SPECIAL + randoms
    templates = feature_templates()[: len(values)]
    fast = encode_num_items(templates, np.array(values))
    assert fast == encode_items(_reference_items(values))
    # every DS length of the formatter occurs (odd lengths are padded to even)
    lengths = {len(ds_string(v).rstrip(b" ")) for v in values}
    assert lengths >= set(range(3, 17)), sorted(lengths)


def test_every_feature_template_equals_pydicom_encoding_of_its_highdicom_item() -> None:
    """The spliced heads of all 4096 features (and their units) are pydicom's bytes."""
    templates = feature_templates()
    assert len(templates) == N_FEATURES
    for i, template in enumerate(templates):
        item = hd.sr.Measurement(name=feature_concept(i), value=0.0, unit=UNIT_NONE)[0]
        want = template_from_item(item)
        assert template.head == want.head, i
        assert template.units == want.units, i


def test_concept_head_template_refuses_an_unexpected_layout() -> None:
    # a copy: the item holds the cached concept object, which must stay as it is
    item = copy.deepcopy(hd.sr.Measurement(name=feature_concept(3), value=0.0, unit=UNIT_NONE)[0])
    heads = concept_head_template(item)
    assert heads.head("feature_3", "FMCIB feature 3") == template_from_item(item).head
    item.ConceptNameCodeSequence[0].CodingSchemeVersion = "1"  # between designator and meaning
    versioned = concept_head_template(item)
    assert b"\x08\x00\x03\x01SH\x02\x001 " in versioned.between
    assert versioned.head("feature_3", "FMCIB feature 3") == template_from_item(item).head
    item.ConceptNameCodeSequence.append(pydicom.Dataset())  # two concept names: not a NUM head
    with pytest.raises(ExportError, match="concept name"):
        concept_head_template(item)


def test_encoded_items_decode_to_the_values() -> None:
    """pydicom decodes the raw Content Sequence into items with the exact values."""
    values = np.array(SPECIAL, dtype=np.float64)
    ds = pydicom.Dataset()
    ds.set_original_encoding(False, True, "iso8859")
    ds[0x0040A730] = raw_content_sequence(encode_num_items(feature_templates()[: len(values)], values))
    items = ds.ContentSequence
    assert len(items) == len(values)
    for i, (item, v) in enumerate(zip(items, values, strict=True)):
        assert item.ValueType == "NUM"
        assert item.RelationshipType == "CONTAINS"
        assert item.ConceptNameCodeSequence[0].CodeValue == f"feature_{i}"
        mv = item.MeasuredValueSequence[0]
        assert struct.pack("<d", mv.FloatingPointValue) == struct.pack("<d", v)  # -0.0 too
        assert float(mv.NumericValue) == pytest.approx(v, rel=1e-9, abs=1e-300)
        assert mv.MeasurementUnitsCodeSequence[0].CodeValue == "1"


def test_bad_values_and_layouts_are_refused() -> None:
    templates = feature_templates()[:3]
    with pytest.raises(ExportError, match="NaN or infinite"):
        encode_num_items(templates, np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ExportError, match="values for 3 NUM items"):
        encode_num_items(templates, np.array([1.0, 2.0]))
    integer = hd.sr.NumContentItem(
        name=feature_concept(0), value=3, unit=UNIT_NONE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )  # an int has no Floating Point Value
    with pytest.raises(ExportError, match="layout"):
        template_from_item(integer)
    qualified = hd.sr.NumContentItem(
        name=feature_concept(0),
        value=3.0,
        unit=UNIT_NONE,
        qualifier=codes.DCM.ValueUnknown,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    with pytest.raises(ExportError, match="layout"):
        template_from_item(qualified)


def _same_timestamps(fast: pydicom.Dataset, reference: pydicom.Dataset) -> None:
    """Copy the creation time stamps highdicom takes from the clock (the only difference)."""
    for kw in ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime"):
        if kw in fast:
            setattr(reference, kw, fast.get(kw))
    for a, b in zip(fast.ContributingEquipmentSequence, reference.ContributingEquipmentSequence, strict=True):
        if "ContributionDateTime" in a:
            b.ContributionDateTime = a.ContributionDateTime


def test_sr_file_is_byte_identical_to_the_reference_encoding(  # type: ignore[no-untyped-def]
    tmp_path: Path, sample_ct, sample_seg, sample_volume, provenance: Provenance, result_factory
) -> None:
    """Lesions from a SEG and from seeds, a prediction, a non-ASCII lesion id in the CT's
    character set: the fast SR file equals the one built and encoded item by item."""
    rng = np.random.default_rng(3)
    ct = sample_ct[0]
    first = result_factory(sample_volume, ct, "lung1/seg1", NODULE, rng, seg=sample_seg, predictions=(("os_2y", 0.25),))
    results = [
        replace(first, lesion=replace(first.lesion, origin=replace(first.lesion.origin, segment_label="Läsion ÄÖÜ"))),  # type: ignore[type-var]
        result_factory(sample_volume, ct, "Läsion 2 ÄÖÜ", SeedPoint(60.0, -100.0, -600.0), rng),
    ]
    segs = {sample_seg.SOPInstanceUID: sample_seg}
    fast = build_feature_sr(sample_ct, results, provenance, segs)
    reference = build_feature_sr(sample_ct, results, provenance, segs, reference_encoding=True)
    _same_timestamps(fast, reference)
    fast_bytes = write_sr(fast, tmp_path / "fast").read_bytes()
    reference_bytes = write_sr(reference, tmp_path / "reference").read_bytes()
    assert len(fast_bytes) > 2 * 4096 * 100
    assert fast_bytes == reference_bytes
    back = pydicom.dcmread(
        tmp_path / "fast" / "dicom" / ct.StudyInstanceUID / ct.SeriesInstanceUID / "fmcib_features_SR.dcm"
    )
    groups = back.ContentSequence[-1].ContentSequence
    tracking = [it.TextValue for it in groups[0].ContentSequence if it.ConceptNameCodeSequence[0].CodeValue == "112039"]
    assert tracking == ["FMCIB lesion 1 - Läsion ÄÖÜ (SEG #1)"]  # Tracking Identifier, in the CT's character set
