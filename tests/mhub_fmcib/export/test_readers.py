"""The SR and the patch SEG as independent readers see them: dcmqi (``tid1500reader``,
``segimage2itkimage``: what 3D Slicer uses) and dcmjs (the DICOM library OHIF uses), on a
series with three lesions from one SEG and an edge lesion from a seed point."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from mhub_fmcib.export import build_feature_sr, build_patch_region_seg, cube_mask, write_seg, write_sr
from mhub_fmcib.export.labels import MAX_LABEL
from mhub_fmcib.export.sr import DEMO_SR_SERIES_DESCRIPTION, lesion_tracking_uid
from mhub_fmcib.provenance import Provenance
from mhub_fmcib.records import LesionResult, SeedPoint

ROOT = Path(__file__).resolve().parents[3]
JS = ROOT / "tests" / "js"
LABELS = ["Nodule", "Nodule", "Mass"]
SEEDS = [SeedPoint(-15.0, -6.0, -5.0), SeedPoint(15.0, 15.0, -11.0), SeedPoint(25.0, -18.0, 7.0)]
EDGE = SeedPoint(37.0, 39.0, 12.0)
EXPECTED = [
    "FMCIB lesion 1 - Nodule (SEG #1)",
    "FMCIB lesion 2 - Nodule (SEG #2)",
    "FMCIB lesion 3 - Mass (SEG #3)",
    "FMCIB lesion 4 - seed point (row 7)",
]


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (PyPI dcmqi, in the test extras)")
    return found


@dataclass(frozen=True)
class Written:
    """The written study: CT datasets, lesion results, SR and SEG paths."""

    cts: list[pydicom.Dataset]
    results: list[LesionResult]
    sr: Path
    seg: Path


@pytest.fixture(scope="module")
def written(tmp_path_factory, ct_factory, result_factory, provenance: Provenance) -> Written:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("readers")
    cts, vol = ct_factory()
    mask = np.zeros((12, 36, 40, 3), bool)
    mask[4:7, 10:14, 10:14, 0] = mask[2:5, 20:25, 25:30, 1] = mask[8:11, 5:9, 30:35, 2] = True
    uids = (f"1.2.826.0.1.3680043.10.1.{i}" for i in itertools.count(1))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type="MANUAL",
        )
        for i, label in enumerate(LABELS)
    ]
    seg_in = hd.seg.Segmentation(
        source_images=cts,
        pixel_array=mask,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=next(uids),
        series_number=5,
        sop_instance_uid=next(uids),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    rng = np.random.default_rng(11)
    results = []
    for n, (seed, label) in enumerate(zip(SEEDS, LABELS, strict=True), start=1):
        lid = f"{cts[0].SeriesInstanceUID}/{seg_in.SOPInstanceUID}/{n}"
        r = result_factory(vol, cts[0], lid, seed, rng, seg=seg_in)
        origin = replace(r.lesion.origin, segment_number=n, segment_label=label)  # type: ignore[type-var]
        results.append(replace(r, lesion=replace(r.lesion, origin=origin)))
    results.append(result_factory(vol, cts[0], "seeds.csv:row7", EDGE, rng))
    sr = build_feature_sr(cts, results, provenance, {seg_in.SOPInstanceUID: seg_in})
    built = build_patch_region_seg(cts, vol, results, provenance)
    assert built.dataset is not None and len(built.segments) == 4
    masks = [cube_mask(vol, r.patch.read_corners_lps()) for r in results]  # type: ignore[union-attr]
    np.save(out / "masks.npy", np.stack(masks))
    return Written(cts, results, write_sr(sr, out), write_seg(built.dataset, out, str(cts[0].SeriesInstanceUID)))


def test_tid1500reader_one_group_per_lesion(tmp_path: Path, written: Written) -> None:
    out = tmp_path / "sr.json"
    proc = subprocess.run(
        [_tool("tid1500reader"), "--inputDICOM", str(written.sr), "--outputMetadata", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    groups = doc["Measurements"]
    assert [g["TrackingIdentifier"] for g in groups] == EXPECTED
    assert all(len(g["TrackingIdentifier"]) <= MAX_LABEL for g in groups)
    series = str(written.cts[0].SeriesInstanceUID)
    assert [g["TrackingUniqueIdentifier"] for g in groups] == [
        lesion_tracking_uid(series, r.lesion.lesion_id) for r in written.results
    ]
    assert [g.get("ReferencedSegment") for g in groups] == [1, 2, 3, None]
    for g, r in zip(groups, written.results, strict=True):
        items = {m["quantity"]["CodeValue"]: m for m in g["measurementItems"]}
        assert sum(k.startswith("feature_") for k in items) == 4096
        seed = [float(items[f"seed-{a}-lps"]["value"]) for a in "xyz"]  # the seed, as dcmqi shows it
        assert seed == r.lesion.seed.as_array().tolist()
        assert {items[f"seed-{a}-lps"]["units"]["CodeValue"] for a in "xyz"} == {"mm"}


def test_segimage2itkimage_one_label_per_lesion(tmp_path: Path, written: Written) -> None:
    proc = subprocess.run(
        [
            _tool("segimage2itkimage"),
            "--inputDICOM",
            str(written.seg),
            "--outputDirectory",
            str(tmp_path),
            "--outputType",
            "nrrd",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    segments = [s for group in meta["segmentAttributes"] for s in group]
    assert [s["SegmentLabel"] for s in segments] == EXPECTED
    assert [s["TrackingIdentifier"] for s in segments] == EXPECTED
    colours = [tuple(s["recommendedDisplayRGBValue"]) for s in segments]
    assert len(set(colours)) == len(colours) == 4
    # each label file holds exactly the CT voxels of the region its lesion's encoder read
    masks = np.load(written.sr.parents[3] / "masks.npy")
    files = sorted(tmp_path.glob("*.nrrd"), key=lambda p: int(p.stem))
    assert len(files) == 4
    for f, want in zip(files, masks, strict=True):
        img = sitk.ReadImage(str(f))
        arr = sitk.GetArrayFromImage(img) > 0  # (k, j, i) on the SEG's frames
        # place the SEG frames back on the CT grid by their physical positions
        got = np.zeros(want.shape, bool)
        for kk, jj, ii in np.argwhere(arr):
            lps = np.array(img.TransformIndexToPhysicalPoint((int(ii), int(jj), int(kk))))
            ijk = np.rint((lps - written.cts[0].ImagePositionPatient) / [2.0, 2.0, 3.0]).astype(int)
            got[tuple(ijk)] = True
        np.testing.assert_array_equal(got, want)


def test_dcmjs_reads_the_same_labels(written: Written) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed (Debian nodejs)")
    if not (JS / "node_modules" / "dcmjs").is_dir():
        pytest.skip("dcmjs not installed: run `npm ci` in tests/js (make test does)")
    proc = subprocess.run(
        [node, str(JS / "read_labels.js"), str(written.sr), str(written.seg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    groups = doc["sr"]["groups"]
    assert [g["trackingIdentifier"] for g in groups] == EXPECTED
    for g, r in zip(groups, written.results, strict=True):
        assert g["features"] == 4096
        assert [g["seed"][a] for a in "xyz"] == r.lesion.seed.as_array().tolist()
        (point,) = g["scoord3d"]  # the seed SCOORD3D: "Seed point" or the Volume Surface ROI
        assert point["graphicType"] == "POINT"
        np.testing.assert_allclose(point["data"], r.lesion.seed.as_array(), atol=1e-4)
    segments = doc["seg"]["segments"]
    assert [s["label"] for s in segments] == EXPECTED
    assert [s["trackingId"] for s in segments] == EXPECTED
    assert len({tuple(s["cielab"]) for s in segments}) == 4


def test_demonstration_run_is_marked(tmp_path: Path, ct_factory, result_factory, provenance: Provenance) -> None:  # type: ignore[no-untyped-def]
    cts, vol = ct_factory()
    res = [result_factory(vol, cts[0], "a", SeedPoint(0.0, 0.0, 0.0), np.random.default_rng(0))]
    sr = build_feature_sr(cts, res, provenance, demonstration=True)
    assert sr.SeriesDescription == DEMO_SR_SERIES_DESCRIPTION
    path = write_sr(sr, tmp_path)
    doc = hd.sr.srread(path)
    (group,) = doc.content.get_volumetric_roi_measurement_groups()
    params = [it.TextValue for it in group[0].ContentSequence if it.ConceptNameCodeSequence[0].CodeValue == "111002"]
    assert params[0].startswith("demonstration=")
    seg = build_patch_region_seg(cts, vol, res, provenance, demonstration=True).dataset
    assert seg is not None and seg.SeriesDescription.startswith("DEMONSTRATION")
    plain = build_feature_sr(cts, res, provenance)
    assert "DEMONSTRATION" not in plain.SeriesDescription
