"""TID 1500 SR: validity (dciodvfy, dsrdump), round trip, determinism, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fmcib_testlib.alive import BuildTracker
from pydicom.sr.codedict import codes

from mhub_fmcib.config import Precision
from mhub_fmcib.export import ExportError, build_feature_sr, build_feature_srs, write_sr, write_srs
from mhub_fmcib.export import sr as sr_module
from mhub_fmcib.export.patch_seg import build_patch_region_seg, write_seg
from mhub_fmcib.export.sr import (
    ALGORITHM_NAME,
    FMCIB_SCHEME,
    SrPart,
    iter_feature_srs,
    lesion_tracking_uid,
    prediction_concept,
    write_feature_srs,
)
from mhub_fmcib.provenance import Provenance
from mhub_fmcib.records import LesionResult, LesionStatus, SeedPoint

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
            if name.CodingSchemeDesignator == FMCIB_SCHEME and name.CodeValue.startswith("seed-"):
                out.setdefault("seed", {})[name.CodeValue[5]] = float(mv.FloatingPointValue)  # type: ignore[index]
                assert mv.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
            elif name.CodingSchemeDesignator == FMCIB_SCHEME and name.CodeValue.startswith("feature_"):
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
    assert allowed == 2 * (4096 + 3) + 1 + 1  # feature and seed codes, 1 prediction, the declaration

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
    assert g0["tracking_id"] == "FMCIB lesion 1 - Nodule (SEG #1)"
    assert g1["tracking_id"] == "FMCIB lesion 2 - seed point"
    assert g0["tracking_uid"] == lesion_tracking_uid(ct.SeriesInstanceUID, "lung1/seg1")
    assert g0["segment"] == (sample_seg.SOPInstanceUID, 1)
    assert "segment" not in g1
    for g, r in zip((g0, g1), ok, strict=True):
        key = "Seed point" if g is g0 else "Volume Surface"
        coords, gtype, for_uid = g[key]  # type: ignore[misc]
        assert gtype == "POINT"
        assert for_uid == ct.FrameOfReferenceUID
        np.testing.assert_allclose(coords, r.lesion.seed.as_array(), rtol=0, atol=1e-4)
        seed = g["seed"]  # type: ignore[index]
        assert [seed["x"], seed["y"], seed["z"]] == r.lesion.seed.as_array().tolist()  # type: ignore[index]
        _check_features(g, r)
    assert g0["preds"] == {prediction_concept("os_2y").value: 0.25}

    # highdicom's own reader sees the same structure.
    doc = hd.sr.srread(path)
    report = doc.content
    hd_groups = report.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in hd_groups] == [
        "FMCIB lesion 1 - Nodule (SEG #1)",
        "FMCIB lesion 2 - seed point",
    ]
    assert [str(g.tracking_uid) for g in hd_groups] == [
        lesion_tracking_uid(ct.SeriesInstanceUID, r.lesion.lesion_id) for r in ok
    ]
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
    assert allowed == 4 * (4096 + 3) + 1
    groups = [_read_group(g) for g in _groups(pydicom.dcmread(path))]
    assert [g["tracking_id"] for g in groups] == [f"FMCIB lesion {n} - seed point" for n in range(1, 5)]
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
    """200 lesions: one SR refuses clearly (no file) above its lesion limit and builds with a
    raised limit; by default they go into four SRs of 50; the patch SEG with 200 segments
    is written and valid."""
    cts, vol = ct_factory(shape=(40, 40, 20))
    rng = np.random.default_rng(5)
    seeds = rng.uniform([-38, -28, -18], [38, 48, 35], size=(200, 3))
    res = [result_factory(vol, cts[0], f"L{i:03d}", SeedPoint(*map(float, s)), rng) for i, s in enumerate(seeds)]
    with pytest.raises(ExportError, match=r"200 lesions exceed the limit of 50 lesions in one SR; build_feature_srs"):
        build_feature_sr(cts, res, provenance)
    assert not list(tmp_path.rglob("*.dcm"))
    # just above a small limit it refuses, at the limit it builds
    with pytest.raises(ExportError, match="exceed the limit of 2 lesions"):
        build_feature_sr(cts, res[:3], provenance, max_lesions=2)
    assert len(_groups(build_feature_sr(cts, res[:2], provenance, max_lesions=2))) == 2
    parts = build_feature_srs(cts, res, provenance)
    assert [len(_groups(p)) for p in parts] == [50, 50, 50, 50]
    del parts
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


def _tracking_uids(sr: pydicom.Dataset) -> list[str]:
    """Each group's Tracking Unique Identifier (the items before its measurements)."""
    out = []
    for group in _groups(sr):
        items = group.ContentSequence
        out.append(next(str(it.UID) for it in items if it.ValueType == "UIDREF" and it.UID))
    return out


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (PyPI dcmqi, in the test extras)")
    return found


def _lesions(ct_factory, result_factory, n: int, seed: int) -> tuple[list[pydicom.Dataset], list[LesionResult]]:  # type: ignore[no-untyped-def]
    cts, vol = ct_factory(shape=(40, 40, 20))
    rng = np.random.default_rng(seed)
    seeds = rng.uniform([-38, -28, -18], [38, 48, 35], size=(n, 3))
    return cts, [result_factory(vol, cts[0], f"L{i:02d}", SeedPoint(*map(float, s)), rng) for i, s in enumerate(seeds)]


def _check_parts(
    cts: list[pydicom.Dataset], results: Sequence[LesionResult], paths: Sequence[Path], sizes: Sequence[int]
) -> list[pydicom.Dataset]:
    """The parts hold ``sizes`` lesions, one SR series, InstanceNumbers 1..n, each naming
    every other part in its Pertinent Other Evidence and the CT as evidence; every OK
    lesion's Tracking UID is in exactly one part."""
    back = [pydicom.dcmread(p) for p in paths]
    assert [len(_groups(b)) for b in back] == list(sizes)
    assert [int(b.InstanceNumber) for b in back] == list(range(1, len(paths) + 1))
    assert len({b.SeriesInstanceUID for b in back}) == 1 and len({b.SOPInstanceUID for b in back}) == len(back)
    assert {b.StudyInstanceUID for b in back} == {cts[0].StudyInstanceUID}
    assert back[0].SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in cts}
    series_uid = str(cts[0].SeriesInstanceUID)
    tracking = [u for b in back for u in _tracking_uids(b)]
    ok_ids = [r.lesion.lesion_id for r in results if r.status is LesionStatus.OK]
    assert sorted(tracking) == sorted(lesion_tracking_uid(series_uid, i) for i in ok_ids)
    assert len(set(tracking)) == len(tracking) == len(ok_ids)
    for b in back:
        (item,) = b.PertinentOtherEvidenceSequence
        assert item.StudyInstanceUID == b.StudyInstanceUID
        (series,) = item.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == b.SeriesInstanceUID
        others = [(o.SOPClassUID, o.SOPInstanceUID) for o in back if o is not b]
        assert [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in series.ReferencedSOPSequence] == others
        (evidence,) = b.CurrentRequestedProcedureEvidenceSequence
        assert [s.SeriesInstanceUID for s in evidence.ReferencedSeriesSequence] == [series_uid]
        assert len(evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence) == len(cts)
    return back


def test_60_lesions_give_two_cross_referenced_srs(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, failed_factory
) -> None:
    """Above the limit (50) a series' lesions go into several SRs: 60 -> 50 + 10 (a failed
    lesion among them is in none), every lesion's Tracking UID in exactly one, the parts
    cross-referenced (``_check_parts``). The validators read the smaller split of
    ``test_every_part_of_a_split_sr_is_valid`` (dciodvfy takes ~0.5 s and highdicom's
    ``srread`` ~2 s per lesion)."""
    cts, res = _lesions(ct_factory, result_factory, 60, 60)
    res.insert(7, failed_factory(cts[0], "bad", SeedPoint(900.0, 0.0, 0.0), "seed outside the image"))
    paths = write_srs(build_feature_srs(cts, res, provenance), tmp_path)
    assert [p.name for p in paths] == ["fmcib_features_SR_part1of2.dcm", "fmcib_features_SR_part2of2.dcm"]
    assert all(p.parent == paths[0].parent for p in paths)
    back = _check_parts(cts, res, paths, (50, 10))
    _check_features(_read_group(_groups(back[1])[9]), res[60])
    # the same input gives the same UIDs; at the limit one SR under the usual name, no cross-reference
    assert [p.SOPInstanceUID for p in build_feature_srs(cts, res, provenance)] == [b.SOPInstanceUID for b in back]
    (single,) = build_feature_srs(cts, res[:51], provenance)
    assert len(_groups(single)) == 50 and "PertinentOtherEvidenceSequence" not in single
    assert single.SOPInstanceUID == build_feature_sr(cts, res[:51], provenance).SOPInstanceUID
    assert write_srs([single], tmp_path / "one")[0].name == "fmcib_features_SR.dcm"
    with pytest.raises(ExportError, match="at least 1"):
        build_feature_srs(cts, res, provenance, max_lesions=0)


def _timeless(path: Path) -> pydicom.Dataset:
    """The SR at ``path`` without the times it was built at (instance creation, content and
    contribution date-times)."""
    ds = pydicom.dcmread(path)
    for keyword in ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime"):
        delattr(ds, keyword)
    for item in ds.ContributingEquipmentSequence:
        item.pop("ContributionDateTime", None)
    return ds


def test_split_srs_are_built_and_written_one_at_a_time(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, monkeypatch
) -> None:
    """The exporter never holds two parts of a split SR (issue 18: 500 lesions are ten parts
    of ~50 MB): when a part is being built, every part before it has been written and is
    gone from memory; the parts written as they come are those of :func:`write_srs` (but for
    their creation times; cross-references included); a failure after the first part
    removes the part already written."""
    cts, res = _lesions(ct_factory, result_factory, 3, 12)
    tracker = BuildTracker(monkeypatch, sr_module, "_build_part")
    parts = iter_feature_srs(cts, res, provenance, max_lesions=1)
    first = next(parts)
    assert (first.number, first.parts, first.file_name) == (1, 3, "fmcib_features_SR_part1of3.dcm")
    del first, parts
    tracker.clear()
    streamed = write_feature_srs(iter_feature_srs(cts, res, provenance, max_lesions=1), tmp_path / "streamed")
    assert tracker.alive_at_build == [0, 0, 0]
    monkeypatch.undo()
    at_once = write_srs(build_feature_srs(cts, res, provenance, max_lesions=1), tmp_path / "at_once")
    assert (
        [p.name for p in streamed]
        == [p.name for p in at_once]
        == [f"fmcib_features_SR_part{i}of3.dcm" for i in (1, 2, 3)]
    )
    assert [_timeless(p) for p in streamed] == [_timeless(p) for p in at_once]

    def broken() -> Iterator[SrPart]:
        yield next(iter_feature_srs(cts, res, provenance, max_lesions=1))
        raise ExportError("part 2 could not be built")

    with pytest.raises(ExportError, match="part 2"):
        write_feature_srs(broken(), tmp_path / "broken")
    assert not list((tmp_path / "broken").rglob("*.dcm"))


def test_every_part_of_a_split_sr_is_valid(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, dciodvfy
) -> None:
    """12 lesions with a limit of 5: three SRs (5 + 5 + 2), each passing dciodvfy (the one
    allowed warning per use of 99FMCIB), dcmqi's tid1500reader and highdicom's srread."""
    cts, res = _lesions(ct_factory, result_factory, 12, 12)
    paths = write_srs(build_feature_srs(cts, res, provenance, max_lesions=5), tmp_path)
    assert [p.name for p in paths] == [f"fmcib_features_SR_part{i}of3.dcm" for i in (1, 2, 3)]
    _check_parts(cts, res, paths, (5, 5, 2))
    for path, n in zip(paths, (5, 5, 2), strict=True):
        problems, allowed = dciodvfy(path)
        assert problems == []
        assert allowed == n * (4096 + 3) + 1
        out = tmp_path / f"{path.stem}.json"
        proc = subprocess.run(
            [_tool("tid1500reader"), "--inputDICOM", str(path), "--outputMetadata", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(json.loads(out.read_text())["Measurements"]) == n
    last = hd.sr.srread(paths[-1])
    assert len(last.content.get_volumetric_roi_measurement_groups()) == 2
    assert (
        last.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID == last.SeriesInstanceUID
    )


def _algorithm_parameters(sr: pydicom.Dataset) -> list[list[str]]:
    """Per measurement group, the TEXT values of its Algorithm Parameters (DCM 111002) items
    under Algorithm Name (DCM 111001) = the FMCIB encoder."""
    out = []
    for group in _groups(sr):
        params = [
            str(it.TextValue)
            for it in group.ContentSequence
            if it.ConceptNameCodeSequence[0].CodeValue == "111002" and it.ValueType == "TEXT"
        ]
        names = [
            str(it.TextValue) for it in group.ContentSequence if it.ConceptNameCodeSequence[0].CodeValue == "111001"
        ]
        assert names == [ALGORITHM_NAME]
        out.append(params)
    return out


def test_precision_is_an_algorithm_parameter(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance: Provenance, ct_factory, result_factory, dciodvfy
) -> None:
    """A bf16 run's SR says so in every group's algorithm parameters (and fp32 by default);
    its UIDs differ from the fp32 SR's, so one never replaces the other in a PACS."""
    cts, vol = ct_factory()
    rng = np.random.default_rng(16)
    res = [result_factory(vol, cts[0], f"L{i}", SeedPoint(float(x), 0.0, 0.0), rng) for i, x in enumerate((-20, 20))]
    fp32 = build_feature_sr(cts, res, provenance)
    bf16 = build_feature_sr(cts, res, provenance, precision=Precision.BF16)
    path = write_sr(bf16, tmp_path)
    problems, _ = dciodvfy(path)
    assert problems == []
    read = pydicom.dcmread(path)
    for params in _algorithm_parameters(read):
        assert params[-1] == "precision=bf16"
        assert f"weights_sha256={provenance.weights_sha256}" in params
    assert all(p[-1] == "precision=fp32" for p in _algorithm_parameters(fp32))
    assert bf16.SOPInstanceUID != fp32.SOPInstanceUID and bf16.SeriesInstanceUID != fp32.SeriesInstanceUID
    # highdicom reads the file back with its groups and parameters
    again = hd.sr.srread(path)
    assert len(again.content.get_volumetric_roi_measurement_groups()) == 2
    assert all(p[-1] == "precision=bf16" for p in _algorithm_parameters(again))
