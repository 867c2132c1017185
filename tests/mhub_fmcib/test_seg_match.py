"""A SEG whose referenced series is absent is placed by Frame of Reference, never silently:
``features.csv`` says how each SEG was matched (``seg_match``) and ``run.json`` warns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
from fmcib_testlib.dicom_builders import SAMPLE_SEG, copy_ct
from pydicom.uid import generate_uid

from mhub_fmcib.config import RunConfig
from mhub_fmcib.export.tables import read_features_csv
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import run
from mhub_fmcib.plan import plan_dicom_folder


def test_seg_matched_by_frame_of_reference_is_recorded(tmp_path: Path, extractor: FeatureExtractor) -> None:
    named, by_for = tmp_path / "named", tmp_path / "by_for"
    copy_ct(named / "ct")
    shutil.copy2(SAMPLE_SEG, named / "seg.dcm")
    copy_ct(by_for / "ct")
    seg = pydicom.dcmread(SAMPLE_SEG)
    absent = generate_uid()
    seg.ReferencedSeriesSequence[0].SeriesInstanceUID = absent  # e.g. the series was re-sent under a new UID
    seg.save_as(by_for / "seg.dcm")

    [case] = plan_dicom_folder(by_for).cases
    assert case.matched_by_frame_of_reference == {str(seg.SOPInstanceUID)}
    docs, rows = {}, {}
    for folder in (named, by_for):
        cfg = RunConfig(input=folder, output=tmp_path / f"out_{folder.name}", export_sr=False, export_seg=False,
                        export_qc=False)  # fmt: skip
        report = run(cfg, {}, extractor=extractor)
        assert report.exit_code == 0 and report.n_ok == 1
        rows[folder.name] = read_features_csv(cfg.output / "features.csv")
        docs[folder.name] = json.loads((cfg.output / "run.json").read_text())
    assert rows["named"][0][0]["seg_match"] == "referenced_series"
    assert rows["by_for"][0][0]["seg_match"] == "frame_of_reference"
    assert docs["named"]["warnings"] == []
    [warning] = docs["by_for"]["warnings"]
    assert "by Frame of Reference" in warning and absent in warning and str(by_for / "seg.dcm") in warning
    assert docs["by_for"]["lesions"][0]["seg_match"] == "frame_of_reference"
    # the same segment on the same CT: the same features
    assert (rows["named"][1] == rows["by_for"][1]).all()
