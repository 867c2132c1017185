"""TID 1500 SR: validity (dciodvfy, dsrdump), round trip, determinism, bad input."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from mhub_fmcib.export import ExportError, build_feature_sr, write_sr
from mhub_fmcib.export.patch_seg import build_patch_region_seg, write_seg
from mhub_fmcib.export.sr import FMCIB_SCHEME, lesion_tracking_uid, prediction_concept
from mhub_fmcib.provenance import Provenance
from mhub_fmcib.records import LesionResult, SeedPoint

NODULE = SeedPoint(-21.858572, -120.535814, -611.496416)  # sample_data/README.md


def _groups(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    (measurements,) = [it for it in sr.ContentSequence if it.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return list(measurements.ContentSequence)


def _read_group(group: pydicom.Dataset) -> dict[str, object]:
    """Independent pydicom traversal of one measurement group."""
    out: dict[str, object] = {"features": {}, "ds": {}, "preds": {}}
    for it in group.ContentSequence:
        name = it.ConceptNameCodeSequence[0]
        if it.ValueType == "NUM":
            mv = it.MeasuredValueSequence[0]
            if name.CodingSchemeDesignator == FMCIB_SCHEME and name.CodeValue.startswith("feature_"):
                i = int(name.CodeValue.split("_")[1])
                out["features"][i] = float(mv.FloatingPointValue)  # type: ignore[index]
                out["ds"][i] = float(mv.NumericValue)  # type: ignore[index]
                assert len(str(mv.NumericValue)) <= 16
            else:
                out["preds"][name.CodeValue] = float(mv.FloatingPointValue)  # type: ignore[index]
        elif it.ValueType == "SCOORD3D":
            out[name.CodeMeaning] = (
                list(map(float, it.GraphicData)),
                it.GraphicType,
                it.ReferencedFrameOfReferenceUID,
            )
        elif it.ValueType == "IMAGE" and name.CodeMeaning == "Referenced Segment":
            ref = it.ReferencedSOPSequence[0]
            out["segment"] = (ref.ReferencedSOPInstanceUID, int(ref.ReferencedSegmentNumber))
        elif it.ValueType == "TEXT" and name.CodeMeaning == "Tracking Identifier":
            out["tracking_id"] = it.TextValue
        elif it.ValueType == "UIDREF" and name.CodeMeaning == "Tracking Unique Identifier":
            out["tracking_uid"] = it.UID
    return out


def _check_features(read: dict[str, object], result: LesionResult) -> None:
    feats = np.array([read["features"][i] for i in range(4096)])  # type: ignore[index]
    ds = np.array([read["ds"][i] for i in range(4096)])  # type: ignore[index]
    expected = np.asarray(result.features, dtype=np.float32)
    # FD holds the float32 value exactly; DS (16 characters) to a relative 1e-9 or better
    # for these magnitudes (1e-7 ... 1e3): at least 10 significant digits survive.
    np.testing.assert_array_equal(feats.astype(np.float32), expected)
    np.testing.assert_allclose(ds, expected.astype(np.float64), rtol=1e-9, atol=0)


@pytest.fixture(scope="module")
def sample_results(  # type: ignore[no-untyped-def]
    sample_ct, sample_seg, sample_volume, result_factory, failed_factory
) -> list[LesionResult]:
    rng = np.random.default_rng(7)
    ct = sample_ct[0]
    return [
        result_factory(
            sample_volume,
            ct,
            "lung1/seg1",
            NODULE,
            rng,
            seg=sample_seg,
            predictions=(("os_2y", 0.25),),
        ),
        result_factory(sample_volume, ct, "user seed 2", SeedPoint(60.0, -100.0, -600.0), rng),
        failed_factory(ct, "bad seed", SeedPoint(900.0, 0.0, 0.0), "seed outside the image"),
    ]


def test_sample_sr_valid_and_round_trips(  # type: ignore[no-untyped-def]
    tmp_path: Path, sample_ct, sample_seg, sample_results, provenance: Provenance, dciodvfy
) -> None:
    sr = build_feature_sr(sample_ct, sample_results, provenance, {sample_seg.SOPInstanceUID: sample_seg})
    path = write_sr(sr, tmp_path)
    ct = sample_ct[0]
    assert path == (tmp_path / "dicom" / ct.StudyInstanceUID / ct.SeriesInstanceUID / "fmcib_features_SR.dcm")
    problems, allowed = dciodvfy(path)
    assert problems == []
    assert allowed == 2 * 4096 + 1 + 1  # feature codes, 1 prediction, the declaration

    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == ct.StudyInstanceUID
    assert back.PatientID == ct.PatientID
    assert back.PatientName == ct.PatientName
    assert back.VerificationFlag == "UNVERIFIED"
    assert "research" in back.SeriesDescription.lower()
    (scheme,) = back.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == FMCIB_SCHEME
    assert scheme.CodingSchemeName
    (eq,) = [e for e in back.ContributingEquipmentSequence if e.Manufacturer == "mhub-fmcib developers"]
    assert eq.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert provenance.package_version in list(eq.SoftwareVersions)

    groups = _groups(back)
    assert len(groups) == 2  # the failed lesion is not in the SR
    g0, g1 = (_read_group(g) for g in groups)
    ok = sample_results[:2]
    assert g0["tracking_id"] == "lung1/seg1"
    assert g0["tracking_uid"] == lesion_tracking_uid(ct.SeriesInstanceUID, "lung1/seg1")
    assert g0["segment"] == (sample_seg.SOPInstanceUID, 1)
    assert "segment" not in g1
    for g, r in zip((g0, g1), ok, strict=True):
        key = "Seed point" if g is g0 else "Volume Surface"
        coords, gtype, for_uid = g[key]  # type: ignore[misc]
        assert gtype == "POINT"
        assert for_uid == ct.FrameOfReferenceUID
        np.testing.assert_allclose(coords, r.lesion.seed.as_array(), rtol=0, atol=1e-4)
        _check_features(g, r)
    assert g0["preds"] == {prediction_concept("os_2y").value: 0.25}

    # highdicom's own reader sees the same structure.
    doc = hd.sr.srread(path)
    report = doc.content
    hd_groups = report.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in hd_groups] == ["lung1/seg1", "user seed 2"]
    seg_ref = hd_groups[0].referenced_segment
    assert seg_ref is not None
    assert seg_ref.referenced_sop_instance_uid == sample_seg.SOPInstanceUID
    assert hd_groups[0].finding_type == codes.SCT.Nodule
    roi = hd_groups[1].roi
    assert isinstance(roi, hd.sr.VolumeSurface)
    assert roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    m = hd_groups[1].get_measurements(name=hd.sr.CodedConcept("feature_17", FMCIB_SCHEME, "x"))
    assert len(m) == 1
    assert m[0].value == float(ok[1].features[17])


def test_dsrdump_renders_sr(
    tmp_path: Path,
    sample_ct,
    sample_seg,
    sample_results,  # type: ignore[no-untyped-def]
    provenance: Provenance,
) -> None:
    exe = shutil.which("dsrdump")
    if exe is None:
        pytest.skip("dsrdump (Debian package dcmtk) is not installed")
    sr = build_feature_sr(sample_ct, sample_results[:2], provenance, {sample_seg.SOPInstanceUID: sample_seg})
    path = write_sr(sr, tmp_path)
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "E:" not in proc.stderr, proc.stderr
    assert "W:" not in proc.stderr, proc.stderr
    assert "Imaging Measurement Report" in proc.stdout
    assert proc.stdout.count('"Measurement Group"') == 2
    assert proc.stdout.count('"FMCIB feature 4095"') == 2


def test_uids_are_deterministic(
    sample_ct,
    sample_seg,
    sample_results,  # type: ignore[no-untyped-def]
    provenance: Provenance,
) -> None:
    segs = {sample_seg.SOPInstanceUID: sample_seg}
    a = build_feature_sr(sample_ct, sample_results[1:2], provenance, segs)
    b = build_feature_sr(sample_ct, sample_results[1:2], provenance, segs)
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    other = Provenance(**{**provenance.as_dict(), "weights_sha256": "f" * 64})  # type: ignore[arg-type]
    c = build_feature_sr(sample_ct, sample_results[1:2], other, segs)
    assert c.SOPInstanceUID != a.SOPInstanceUID
    assert c.SeriesInstanceUID != a.SeriesInstanceUID
    assert all(u.startswith("2.25.") for u in (a.SOPInstanceUID, a.SeriesInstanceUID))


def test_anonymised_ct_gives_valid_sr(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, dciodvfy
) -> None:
    cts, vol = ct_factory(anonymised=True)
    for attr in ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "Manufacturer"):
        assert attr not in cts[0]
    rng = np.random.default_rng(3)
    res = [result_factory(vol, cts[0], "a", SeedPoint(0.0, 0.0, 0.0), rng)]
    path = write_sr(build_feature_sr(cts, res, provenance), tmp_path)
    problems, _ = dciodvfy(path)
    # The only messages are "value needed to build a DICOMDIR" for the empty patient and
    # study identifiers, which the anonymised input CT draws as well: not our content.
    ct_path = tmp_path / "ct0.dcm"
    cts[0].save_as(ct_path, enforce_file_format=True)
    ct_problems, _ = dciodvfy(ct_path)
    dicomdir = [p for p in problems if "needed to build DICOMDIR" in p]
    assert [p for p in problems if p not in dicomdir] == []
    assert set(dicomdir) <= set(ct_problems)
    assert {p.rsplit(" - ", 1)[1] for p in dicomdir} == {
        "Patient ID",
        "Study Date",
        "Study Time",
        "Study ID",
    }
    back = pydicom.dcmread(path)
    assert back.PatientID == ""
    assert back.PatientName == ""
    assert back.StudyDate == ""
    assert back.StudyInstanceUID == cts[0].StudyInstanceUID


def test_multi_lesion_series_is_valid(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, dciodvfy
) -> None:
    cts, vol = ct_factory()
    rng = np.random.default_rng(4)
    seeds = [SeedPoint(x, y, z) for x, y, z in [(0, 0, 0), (-30, -20, -15), (30, 30, 10), (-39, 39, 12)]]
    res = [result_factory(vol, cts[0], f"L{i}", s, rng) for i, s in enumerate(seeds)]
    path = write_sr(build_feature_sr(cts, res, provenance), tmp_path)
    problems, allowed = dciodvfy(path)
    assert problems == []
    assert allowed == 4 * 4096 + 1
    groups = [_read_group(g) for g in _groups(pydicom.dcmread(path))]
    assert [g["tracking_id"] for g in groups] == ["L0", "L1", "L2", "L3"]
    for g, r in zip(groups, res, strict=True):
        _check_features(g, r)


def test_bad_inputs_raise_clear_errors(  # type: ignore[no-untyped-def]
    sample_ct, sample_results, provenance: Provenance, ct_factory
) -> None:
    with pytest.raises(ExportError, match="not passed in seg_datasets"):
        build_feature_sr(sample_ct, sample_results[:1], provenance, None)
    with pytest.raises(ExportError, match="no lesion has features"):
        build_feature_sr(sample_ct, sample_results[2:], provenance, None)
    other_cts, _ = ct_factory()
    with pytest.raises(ExportError, match="pass each series' own lesions"):
        build_feature_sr(other_cts, sample_results[1:2], provenance, None)
    with pytest.raises(ExportError, match="do not share one StudyInstanceUID"):
        build_feature_sr([*sample_ct, other_cts[0]], sample_results[1:2], provenance, None)


def test_200_lesions_in_one_series(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, dciodvfy
) -> None:
    """200 lesions: the SR refuses clearly (no file), above its lesion limit, and builds
    with a raised limit; the patch SEG with 200 segments is written and valid."""
    cts, vol = ct_factory(shape=(40, 40, 20))
    rng = np.random.default_rng(5)
    seeds = rng.uniform([-38, -28, -18], [38, 48, 35], size=(200, 3))
    res = [result_factory(vol, cts[0], f"L{i:03d}", SeedPoint(*map(float, s)), rng) for i, s in enumerate(seeds)]
    with pytest.raises(ExportError, match=r"200 lesions exceed the SR limit of 50 .*--sr-max-lesions"):
        build_feature_sr(cts, res, provenance)
    assert not list(tmp_path.rglob("*.dcm"))
    # just above a small limit it refuses, at the limit it builds
    with pytest.raises(ExportError, match="exceed the SR limit of 2"):
        build_feature_sr(cts, res[:3], provenance, max_lesions=2)
    assert len(_groups(build_feature_sr(cts, res[:2], provenance, max_lesions=2))) == 2
    t0 = time.perf_counter()
    big = build_feature_sr(cts, res, provenance, max_lesions=200)
    big_path = write_sr(big, tmp_path / "big")
    print(f"\n200-lesion SR: {time.perf_counter() - t0:.1f} s, {big_path.stat().st_size / 1e6:.0f} MB")
    groups = _groups(big)
    assert len(groups) == 200
    _check_features(_read_group(groups[199]), res[199])
    big_path.unlink()
    t0 = time.perf_counter()
    built = build_patch_region_seg(cts, vol, res, provenance)
    assert built.dataset is not None
    path = write_seg(built.dataset, tmp_path, str(cts[0].SeriesInstanceUID))
    print(f"\n200-segment patch SEG: {time.perf_counter() - t0:.1f} s")
    assert len(built.segments) + len(built.skipped) == 200
    assert len(pydicom.dcmread(path, stop_before_pixels=True).SegmentSequence) == len(built.segments) > 100
    problems, _ = dciodvfy(path)
    assert problems == []
