"""The whole chain on the real sample study: the three input routes agree, features equal
the whole-volume MONAI reference + MONAI's resnet50, and bad input fails only its own case."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from fmcib_testlib.dicom_builders import SAMPLE, SAMPLE_SEG, copy_ct, make_seg, read_ct_datasets, sphere
from fmcib_testlib.reference_pipeline import reference_patch
from fmcib_testlib.runs import RunOutput
from monai.networks.nets import resnet50

from mhub_fmcib.config import InputKind, RunConfig
from mhub_fmcib.export.tables import read_features_csv
from mhub_fmcib.image_io import read_image
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.weights import LoadedWeights
from mhub_fmcib.pipeline import run
from mhub_fmcib.records import LesionStatus, SeedPoint

NO_EXPORT = dict(export_sr=False, export_seg=False, export_qc=False)


def _run(extractor: FeatureExtractor, **kw: object):  # type: ignore[no-untyped-def]
    cfg = RunConfig(**{**NO_EXPORT, **kw})  # type: ignore[arg-type]
    return run(cfg, {}, extractor=extractor)


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, extractor: FeatureExtractor) -> RunOutput:
    out = tmp_path_factory.mktemp("dicom_out")
    return RunOutput(_run(extractor, input=SAMPLE / "dicom", output=out), out)


def test_dicom_route_matches_reference_oracle(
    dicom_run: RunOutput, extractor: FeatureExtractor, loaded_weights: LoadedWeights
) -> None:
    report, out = dicom_run.report, dicom_run.out
    assert report.exit_code == 0 and report.n_ok == 1
    meta, feats = read_features_csv(out / "features.csv")
    row = meta[0]
    assert row["segment_number"] == "1" and row["segment_label"] == "Nodule"
    assert row["seg_sop_instance_uid"] == str(pydicom.dcmread(SAMPLE_SEG, stop_before_pixels=True).SOPInstanceUID)
    assert row["seed_inside_mask"] == "true"
    assert row["weights_sha256"] == extractor.weights.sha256
    # features.csv round-trips float32 exactly
    np.testing.assert_array_equal(feats[0], report.results[0].features)
    # oracle: whole-volume MONAI preprocessing on the NRRD, seed from the label's centre of
    # mass computed here independently, MONAI's own resnet50 with the same weights
    vol = read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")
    lab = np.asarray(read_image(SAMPLE / "nrrd" / "lung1_label.nrrd").array) == 1
    from scipy.ndimage import center_of_mass

    seed = SeedPoint(*vol.index_to_lps(np.asarray(center_of_mass(lab))))
    got_seed = np.array([float(row[f"seed_{a}_lps_mm"]) for a in "xyz"])
    np.testing.assert_allclose(got_seed, seed.as_array(), atol=1e-3)
    net = resnet50(
        spatial_dims=3,
        n_input_channels=1,
        widen_factor=2,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        bias_downsample=True,
        feed_forward=False,
    )
    net.load_state_dict(dict(loaded_weights.state_dict))
    net.eval()
    with torch.inference_mode():
        expected = net(torch.from_numpy(reference_patch(vol, seed))[None, None]).numpy()[0]
    np.testing.assert_allclose(feats[0], expected, rtol=1e-4, atol=1e-4)
    doc = json.loads((out / "run.json").read_text())
    assert doc["summary"]["lesions_ok"] == 1 and doc["errors"] == []
    assert doc["software"]["weights_sha256"] == extractor.weights.sha256


def test_image_mask_and_seeds_routes_agree(dicom_run: RunOutput, tmp_path: Path, extractor: FeatureExtractor) -> None:
    report = dicom_run.report
    ref = report.results[0].features
    r2 = _run(
        extractor,
        input=SAMPLE / "nrrd" / "lung1_image.nrrd",
        output=tmp_path / "a",
        input_kind=InputKind.IMAGE_FILE,
        mask=SAMPLE / "nrrd" / "lung1_label.nrrd",
    )
    assert r2.exit_code == 0 and r2.n_ok == 1
    np.testing.assert_allclose(r2.results[0].features, ref, rtol=1e-4, atol=1e-4)
    r3 = _run(extractor, input=SAMPLE / "seeds.csv", output=tmp_path / "b", input_kind=InputKind.SEEDS_CSV)
    assert r3.exit_code == 0 and r3.n_ok == 2
    for r in r3.results:
        np.testing.assert_allclose(r.features, ref, rtol=1e-4, atol=1e-4)
    with open(tmp_path / "b" / "features.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["lesion_name"] for r in rows] == ["lung1_nodule", "lung1_nodule"]  # passthrough
    assert rows[1]["series_instance_uid"] == report.results[0].lesion.series_instance_uid


def test_bad_inputs_fail_alone(tmp_path: Path, extractor: FeatureExtractor) -> None:
    inp = tmp_path / "in"
    ct_paths = copy_ct(inp / "ct")
    shutil.copy2(SAMPLE_SEG, inp / "good_seg.dcm")
    ct = read_ct_datasets(ct_paths)
    shape = (512, 512, 48)
    # a multi-lesion SEG: a second lesion and an empty segment
    make_seg(
        ct, {"second": sphere(shape, (300, 260, 20), (8, 8, 2)), "empty": np.zeros(shape, bool)}, inp / "multi_seg.dcm"
    )
    # a SEG whose CT is absent (other series, other frame of reference)
    orphan = pydicom.dcmread(SAMPLE_SEG)
    orphan.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.999"
    orphan.FrameOfReferenceUID = "1.2.3.998"
    orphan.SOPInstanceUID = pydicom.uid.generate_uid()
    orphan.save_as(inp / "orphan_seg.dcm")
    (inp / "junk.dcm").write_bytes(b"DICM" + bytes(500))
    (inp / "trunc.dcm").write_bytes(ct_paths[0].read_bytes()[:2000])
    report = _run(extractor, input=inp, output=tmp_path / "out")
    assert report.exit_code == 1
    ok = {r.lesion.segment_label for r in report.results if r.status is LesionStatus.OK}
    assert ok == {"Nodule", "second"}
    reasons = " | ".join(f.reason for f in report.failures)
    assert "1.2.3.999" in reasons and "not in the input" in reasons
    assert "empty" in reasons
    doc = json.loads((tmp_path / "out" / "run.json").read_text())
    assert doc["summary"]["exit_code"] == 1
    assert "junk.dcm" in {s["path"].split("/")[-1] for s in doc["skipped_files"]}
    # the truncated copy of a slice is dropped, named, and the intact slice is used
    assert any("trunc.dcm" in e["reason"] and "damaged duplicate" in e["reason"] for e in doc["errors"])
    meta, feats = read_features_csv(tmp_path / "out" / "features.csv")
    assert sorted(m["segment_label"] for m in meta) == ["Nodule", "second"]
    assert np.all(np.isfinite(feats))


def test_seed_rows_outside_or_ras(tmp_path: Path, extractor: FeatureExtractor) -> None:
    csv_path = tmp_path / "seeds.csv"
    img = (SAMPLE / "nrrd" / "lung1_image.nrrd").resolve()
    csv_path.write_text(
        "image_path,coordX,coordY,coordZ,note\n"
        f"{img},-21.858572,-120.535814,-611.496416,good\n"
        f"{img},21.858572,120.535814,-611.496416,ras\n"
        f"{img},0,0,9999,outside\n"
        f"{tmp_path / 'missing.nrrd'},0,0,0,noimage\n"
        f"{img},abc,0,0,notanumber\n"
    )
    report = _run(extractor, input=csv_path, output=tmp_path / "out", input_kind=InputKind.SEEDS_CSV)
    assert report.exit_code == 1 and report.n_ok == 1
    errors = {dict(r.lesion.passthrough)["note"]: r.error for r in report.results if r.error}
    assert "RAS" in errors["ras"] and "negate coordX and coordY" in errors["ras"]
    assert "outside the image" in errors["outside"]
    reasons = [f.reason for f in report.failures]
    assert any("missing.nrrd" in r for r in reasons)
    assert any("row 5" in r and "numbers" in r for r in reasons)


def test_rtstruct_route_equals_seg_route(dicom_run: RunOutput, tmp_path: Path, extractor: FeatureExtractor) -> None:
    """The from_rtstruct workflow: the nodule drawn as RTSTRUCT contours gives the SEG's seed
    and features; a POINT ROI is used as the seed as given."""
    from fmcib_testlib.rtstruct_builders import RoiSpec, make_rtstruct, mask_to_contours

    report = dicom_run.report
    inp = tmp_path / "in"
    paths = copy_ct(inp / "ct")
    ct = read_ct_datasets(paths)
    vol = read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")
    label = np.asarray(read_image(SAMPLE / "nrrd" / "lung1_label.nrrd").array) == 1
    seed = report.results[0].lesion.seed
    make_rtstruct(
        ct,
        [
            RoiSpec("GTV", [("CLOSED_PLANAR", c) for c in mask_to_contours(label, vol)], number=1),
            RoiSpec("marker", [("POINT", seed.as_array()[None])], interpreted_type="MARKER", number=2),
        ],
        inp / "rt.dcm",
    )
    shutil.copy2(SAMPLE_SEG, inp / "seg.dcm")  # ignored by this workflow
    rep = _run(extractor, input=inp, output=tmp_path / "out", segmentation_sources=("RTSTRUCT",))
    assert rep.exit_code == 0, rep.failures
    by_label = {r.lesion.segment_label: r for r in rep.results}
    assert set(by_label) == {"GTV", "marker"}
    assert by_label["GTV"].lesion.seed_source.value == "roi_centroid"
    assert by_label["marker"].lesion.seed_source.value == "roi_point"
    for r in by_label.values():
        np.testing.assert_allclose(r.lesion.seed.as_array(), seed.as_array(), atol=1e-3)
        np.testing.assert_allclose(r.features, report.results[0].features, rtol=1e-4, atol=1e-4)
    assert any("SEG instance(s) not used" in n for n in rep.notes)


def test_seeds_csv_naming_a_study_folder(tmp_path: Path, extractor: FeatureExtractor) -> None:
    """A seeds CSV whose image_path is a study folder with two CT series: the series whose
    extent holds the seed is used; a seed inside both is an error listing the candidates."""
    study = tmp_path / "study"
    copy_ct(study / "full")
    for p in sorted((study / "full").glob("*.dcm"))[:10]:  # a second series: the 10 lowest slices
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.777"
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        (study / "slab").mkdir(exist_ok=True)
        ds.save_as(study / "slab" / p.name)
    z_low = float(pydicom.dcmread(sorted((study / "slab").glob("*.dcm"))[0]).ImagePositionPatient[2])
    csv_path = tmp_path / "seeds.csv"
    csv_path.write_text(
        "image_path,coordX,coordY,coordZ\nstudy,-21.858572,-120.535814,-611.496416\n"  # nodule: only in the full series
    )
    rep = _run(extractor, input=csv_path, output=tmp_path / "a", input_kind=InputKind.SEEDS_CSV)
    assert rep.exit_code == 0 and rep.n_ok == 1
    assert rep.results[0].lesion.series_instance_uid != "1.2.826.0.1.3680043.8.498.777"
    csv_path.write_text(f"image_path,coordX,coordY,coordZ\nstudy,-20,-150,{z_low + 10}\n")  # in both
    rep = _run(extractor, input=csv_path, output=tmp_path / "b", input_kind=InputKind.SEEDS_CSV)
    assert rep.exit_code == 1
    msg = rep.failures[0].reason
    assert "2 of them contain" in msg and "1.2.826.0.1.3680043.8.498.777" in msg


def test_nan_voxels_in_the_patch_fail_the_lesion_only(extractor: FeatureExtractor) -> None:
    """NaN voxels where a patch reads (a float image with holes) fail that lesion with a
    clear reason; a lesion elsewhere in the same image is measured."""
    from mhub_fmcib.pipeline import measure
    from mhub_fmcib.records import Lesion, SeedSource, Volume

    arr = np.full((120, 120, 60), -500.0, dtype=np.float32)
    arr[10:20, 10:20, 5:10] = np.nan
    vol = Volume(arr, np.eye(4))
    near = Lesion(lesion_id="near", seed=SeedPoint(15.0, 15.0, 7.0), seed_source=SeedSource.USER)
    far = Lesion(lesion_id="far", seed=SeedPoint(95.0, 95.0, 40.0), seed_source=SeedSource.USER)
    bad, good = measure([near, far], vol, extractor)
    assert bad.status is LesionStatus.FAILED and "NaN" in (bad.error or "")
    assert good.status is LesionStatus.OK and good.features is not None
    assert np.isfinite(good.features).all()


def test_slab_path_features_identical_to_whole_volume(dicom_run: RunOutput, extractor: FeatureExtractor) -> None:
    """Issue 15.12: the DICOM route decodes only the slabs the patches read (here two runs
    of slices, near the first and the last slice, and the nodule's); its features equal
    those of the whole decoded volume bit for bit, and the run's nodule features too."""
    from mhub_fmcib.dicom.ct import assemble_ct, decode_slices
    from mhub_fmcib.dicom.index import InstanceKind, index_folder
    from mhub_fmcib.pipeline import measure, slices_needed
    from mhub_fmcib.records import Lesion, SeedSource

    records = index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT)
    full = assemble_ct(records)
    nodule = dicom_run.report.results[0].lesion.seed
    seeds = [
        nodule,
        SeedPoint(*full.volume.index_to_lps([100.0, 300.0, 1.2])),
        SeedPoint(*full.volume.index_to_lps([400.0, 200.0, 46.0])),
    ]
    lesions = [Lesion(f"l{i}", s, SeedSource.USER) for i, s in enumerate(seeds)]
    lazy = assemble_ct(records, decode=False)
    part = decode_slices(lazy, slices_needed(lazy.volume, seeds))
    assert len(part.slabs) >= 2 and sum(s.shape[2] for s in part.slabs) < full.volume.shape[2]
    got = measure(lesions, part.volume, extractor, slabs=part.slabs)
    want = measure(lesions, full.volume, extractor)
    for g, w in zip(got, want, strict=True):
        assert g.status is w.status is LesionStatus.OK
        np.testing.assert_array_equal(g.features, w.features)
        np.testing.assert_array_equal(g.patch.array, w.patch.array)  # type: ignore[union-attr]
    alone = measure(lesions[:1], full.volume, extractor)  # the run's batch of one
    np.testing.assert_array_equal(dicom_run.report.results[0].features, alone[0].features)
