"""Every stored record reads back equal through its one serialiser (to_dict -> JSON -> from_dict)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from mhub_fmcib.errors import SegmentationError
from mhub_fmcib.records import (
    LESION_ID_COLUMNS,
    N_FEATURES,
    CaseFailure,
    DicomOrigin,
    FileOrigin,
    Lesion,
    LesionResult,
    LesionStatus,
    SeedPoint,
    SeedSource,
    SeriesRef,
    make_lesion_id,
    origin_from_dict,
)

SERIES = SeriesRef("1.2.3", "1.2.3.4", "1.2.3.5")
SEG_ORIGIN = DicomOrigin(
    SERIES,
    "SEG",
    "1.2.3.9",
    2,
    "Nodule",
    finding_type=("27925004", "SCT", "Nodule"),
    finding_site=("39607008", "SCT", "Lung"),
)
RT_ORIGIN = DicomOrigin(SeriesRef("1.2", "1.2.7", None), "RTSTRUCT", "1.2.8", 5, "GTV")
MASK_ORIGIN = FileOrigin(image_path="/data/img.nrrd", mask_path="/data/mask.nrrd", mask_label=3)
ROW_ORIGIN = FileOrigin(image_path="/data/ct_folder", series=SERIES, row=7)


def _json(d: Any) -> Any:
    """Through JSON text and back, as the files hold it."""
    return json.loads(json.dumps(d))


def test_seed_point_round_trip_is_exact() -> None:
    p = SeedPoint(0.1 + 0.2, -1e-300, 123456789.123456789)
    back = SeedPoint.from_dict(_json(p.to_dict()))
    assert back == p and back.x == 0.1 + 0.2


@pytest.mark.parametrize("origin", [SEG_ORIGIN, RT_ORIGIN, MASK_ORIGIN, ROW_ORIGIN])
def test_origin_round_trip(origin: DicomOrigin | FileOrigin) -> None:
    assert origin_from_dict(_json(origin.to_dict())) == origin
    assert type(origin).from_dict(_json(origin.to_dict())) == origin  # type: ignore[attr-defined]


def test_series_ref_round_trip() -> None:
    assert SeriesRef.from_dict(_json(SERIES.to_dict())) == SERIES


@pytest.mark.parametrize("origin", [SEG_ORIGIN, RT_ORIGIN, MASK_ORIGIN, ROW_ORIGIN, None])
def test_lesion_round_trip(origin: DicomOrigin | FileOrigin | None) -> None:
    les = Lesion(
        lesion_id=make_lesion_id(origin) if origin is not None else "made up",
        seed=SeedPoint(1.5, -2.25, 3.0),
        seed_source=SeedSource.USER,
        seed_inside_mask=False if origin is SEG_ORIGIN else None,
        origin=origin,
        passthrough=(("patient", "P1"), ("note", "a,b")),
    )
    assert Lesion.from_dict(_json(les.to_dict())) == les


def test_lesion_result_round_trip_ok_and_failed() -> None:
    les = Lesion("1.2.3.4/1.2.3.9/2", SeedPoint(0, 0, 0), SeedSource.SEGMENT_CENTROID, True, SEG_ORIGIN)
    feats = np.random.default_rng(0).standard_normal(N_FEATURES).astype(np.float32)
    ok = LesionResult(les, LesionStatus.OK, features=feats, predictions=(("malignant", 0.25),))
    back = LesionResult.from_dict(_json(ok.to_dict()), features=feats)
    assert back.lesion == les and back.status is LesionStatus.OK and back.predictions == ok.predictions
    np.testing.assert_array_equal(back.features, feats)
    failed = LesionResult(les, LesionStatus.FAILED, error="seed outside the image")
    back = LesionResult.from_dict(_json(failed.to_dict()))
    assert (back.lesion, back.status, back.error, back.features) == (les, LesionStatus.FAILED, failed.error, None)
    with pytest.raises(ValueError, match="features"):
        LesionResult.from_dict(_json(ok.to_dict()))  # an OK result needs its features


@pytest.mark.parametrize("kind", ["case", "file"])
def test_case_failure_round_trip_and_type_from_exception(kind: str) -> None:
    f = CaseFailure.of("SEG 1.2.3", SegmentationError("no voxel"), ["/a", "/b"], kind=kind)  # type: ignore[arg-type]
    assert (f.error_type, f.reason, f.paths, f.kind) == ("SegmentationError", "no voxel", ("/a", "/b"), kind)
    assert CaseFailure.from_dict(_json(f.to_dict())) == f


def test_lesion_ids_are_formed_in_one_place() -> None:
    assert make_lesion_id(SEG_ORIGIN) == "1.2.3.4/1.2.3.9/2"
    assert make_lesion_id(RT_ORIGIN) == "1.2.7/1.2.8/5"
    assert make_lesion_id(MASK_ORIGIN) == "img.nrrd#label3"
    assert make_lesion_id(ROW_ORIGIN) == "ct_folder:row7"
    with pytest.raises(ValueError, match="mask label or a seeds row"):
        make_lesion_id(FileOrigin(image_path="x.nrrd"))


def test_flat_columns_read_the_origin() -> None:
    seg = Lesion("a", SeedPoint(0, 0, 0), SeedSource.SEGMENT_CENTROID, True, SEG_ORIGIN)
    assert seg.id_columns() == {
        "lesion_id": "a", "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4",
        "seg_sop_instance_uid": "1.2.3.9", "segment_number": 2, "segment_label": "Nodule",
        "seg_match": None, "image_path": None, "mask_path": None,
    }  # fmt: skip
    assert tuple(seg.id_columns()) == LESION_ID_COLUMNS
    by_for = Lesion("a", SeedPoint(0, 0, 0), SeedSource.SEGMENT_CENTROID, True,
                    replace(SEG_ORIGIN, seg_match="frame_of_reference"))  # fmt: skip
    assert by_for.seg_match == "frame_of_reference"
    assert Lesion.from_dict(_json(by_for.to_dict())) == by_for
    with pytest.raises(ValueError, match="seg_match must be"):
        DicomOrigin.from_dict({**SEG_ORIGIN.to_dict(), "seg_match": "guess"})
    rt = Lesion("b", SeedPoint(0, 0, 0), SeedSource.ROI_CENTROID, None, RT_ORIGIN)
    assert rt.seg_sop_instance_uid is None and rt.segment_number == 5 and rt.finding_type is None
    mask = Lesion("c", SeedPoint(0, 0, 0), SeedSource.MASK_CENTROID, True, MASK_ORIGIN)
    assert (mask.segment_number, mask.segment_label, mask.mask_path) == (3, "label 3", "/data/mask.nrrd")
    assert mask.series_instance_uid is None
    row = Lesion("d", SeedPoint(0, 0, 0), SeedSource.USER, None, ROW_ORIGIN)
    assert (row.series_instance_uid, row.image_path, row.segment_number) == ("1.2.3.4", "/data/ct_folder", None)


def test_invalid_records_are_refused() -> None:
    with pytest.raises(ValueError, match="segment numbers start at 1"):
        DicomOrigin(SERIES, "SEG", "1.2", 0, "x")
    with pytest.raises(ValueError, match="SEG or RTSTRUCT"):
        DicomOrigin.from_dict({**SEG_ORIGIN.to_dict(), "source_kind": "MASK"})
    with pytest.raises(ValueError, match="unknown lesion origin"):
        origin_from_dict({"kind": "somewhere"})
    with pytest.raises(ValueError, match=r"\[x, y, z\]"):
        SeedPoint.from_dict([1.0, 2.0])
