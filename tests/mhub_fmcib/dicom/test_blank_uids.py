"""Anonymised series with blank Study/Series/SOP Instance UIDs (what several anonymisers
leave): grouped by folder and geometry, SOPInstanceUID from the file meta, stable derived
UIDs noted in the plan's warnings, and features equal to those of the same series with its
UIDs (the sample as committed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from fmcib_testlib.dicom_builders import SAMPLE, SAMPLE_SEG, copy_ct, ct_files

from mhub_fmcib.config import InputKind, RunConfig
from mhub_fmcib.dicom.index import InstanceKind, index_folder
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import run
from mhub_fmcib.plan import plan_dicom_folder


def blank_copy(dest: Path, keep_study: bool = False) -> list[Path]:
    """The sample CT with Study/Series/SOP Instance UIDs blank in the data set (the file meta
    keeps MediaStorageSOPInstanceUID, as anonymisers that edit the data set only leave it)."""
    paths = copy_ct(dest)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = ds.SOPInstanceUID = ""
        if not keep_study:
            ds.StudyInstanceUID = ""
        ds.save_as(p)
        back = pydicom.dcmread(p, stop_before_pixels=True)
        assert back.SOPInstanceUID == "" and back.file_meta.MediaStorageSOPInstanceUID
    return paths


def test_blank_uids_form_one_series_with_stable_uids(tmp_path: Path) -> None:
    blank_copy(tmp_path / "ct")
    idx = index_folder(tmp_path / "ct")
    assert not idx.skipped
    [(uid, recs)] = idx.by_series(InstanceKind.CT).items()
    want = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct_files())
    assert sorted(r.sop_instance_uid for r in recs) == want
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert index_folder(tmp_path / "ct").by_series(InstanceKind.CT).keys() == {uid}  # stable
    # a second series with another pixel grid in the same folder stays apart
    other = pydicom.dcmread(ct_files()[0])
    other.StudyInstanceUID = other.SeriesInstanceUID = ""
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.SOPInstanceUID = ""
    other.PixelSpacing = [0.5, 0.5]
    other.save_as(tmp_path / "ct" / "other.dcm")
    assert len(index_folder(tmp_path / "ct").by_series(InstanceKind.CT)) == 2


def test_blank_uids_measured_like_the_repaired_series(tmp_path: Path, extractor: FeatureExtractor) -> None:
    blank_copy(tmp_path / "blank")
    shutil.copytree(SAMPLE / "dicom" / "ct", tmp_path / "repaired")
    seed = "-21.858572,-120.535814,-611.496416"
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"image_path,coordX,coordY,coordZ\nblank,{seed}\nrepaired,{seed}\n")
    cfg = RunConfig(input=seeds, output=tmp_path / "out", input_kind=InputKind.SEEDS_CSV, export_sr=False,
                    export_seg=False, export_qc=False)  # fmt: skip
    report = run(cfg, {}, extractor=extractor)
    assert report.exit_code == 0 and report.n_ok == 2, report.failures
    by_image = {Path(str(r.lesion.image_path)).name: r for r in report.results}
    np.testing.assert_array_equal(by_image["blank"].features, by_image["repaired"].features)


def test_blank_uid_series_with_its_seg_is_planned_with_a_warning(tmp_path: Path) -> None:
    blank_copy(tmp_path / "ct", keep_study=True)  # Series and SOP Instance UIDs blank
    shutil.copy2(SAMPLE_SEG, tmp_path / "seg.dcm")
    the_plan = plan_dicom_folder(tmp_path)
    [case] = the_plan.cases  # its SEG names the original series UID: placed by Frame of Reference
    assert case.case_id.startswith("2.25.") and len(case.ct) == 48
    assert case.segs[0].sop_instance_uid in case.matched_by_frame_of_reference
    assert any("blank Study/Series/SOP Instance UIDs" in w and "derived" in w for w in the_plan.warnings)
    assert any("by Frame of Reference" in w for w in the_plan.warnings)
