"""A CT without FrameOfReferenceUID (old JPEG 2000 test slices come so): features are written,
and the SR and the patch-region SEG each fail with a message naming that export and the flag
that skips it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from fmcib_testlib.dicom_builders import SAMPLE_SEG, copy_ct

from mhub_fmcib.config import InputKind, RunConfig
from mhub_fmcib.export.tables import read_features_csv
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import run


def test_sr_and_seg_fail_by_name_and_features_are_written(tmp_path: Path, extractor: FeatureExtractor) -> None:
    inp = tmp_path / "in"
    for p in copy_ct(inp / "ct"):
        ds = pydicom.dcmread(p)
        del ds.FrameOfReferenceUID
        ds.save_as(p)
    shutil.copy2(SAMPLE_SEG, inp / "seg.dcm")
    cfg = RunConfig(input=inp, output=tmp_path / "out", export_qc=False)
    report = run(cfg, {}, extractor=extractor)
    assert report.n_ok == 1 and report.exit_code == 1
    meta, feats = read_features_csv(cfg.output / "features.csv")
    assert len(meta) == 1 and feats.shape == (1, 4096)
    reasons = sorted(f.reason for f in report.failures)
    assert len(reasons) == 2, reasons
    [sr_reason] = [r for r in reasons if " SR " in r]
    [seg_reason] = [r for r in reasons if " SEG " in r]
    assert sr_reason.startswith("the SR of CT series ") and "--no-sr" in sr_reason
    assert seg_reason.startswith("the patch-region SEG of CT series ") and "--no-seg" in seg_reason
    for r in reasons:
        assert "has no FrameOfReferenceUID" in r and "features are in features.csv" in r
    assert not list(cfg.output.rglob("*.dcm"))
    # with both flags the run succeeds
    clean = run(RunConfig(input=inp, output=tmp_path / "out2", export_qc=False, export_sr=False, export_seg=False),
                {}, extractor=extractor)  # fmt: skip
    assert clean.exit_code == 0 and clean.n_ok == 1


def test_pydicom_datas_jpeg2000_ct_slice(tmp_path: Path, extractor: FeatureExtractor) -> None:
    """pydicom-data's ``693_J2KI.dcm``: a JPEG 2000 CT slice without FrameOfReferenceUID,
    measured from a seeds CSV at the slice centre; SR and SEG fail by name."""
    import numpy as np
    import pytest
    from pydicom.data import get_testdata_file

    src = get_testdata_file("693_J2KI.dcm")
    if src is None:
        pytest.skip("pydicom-data (test extra) is not installed")
    ds = pydicom.dcmread(src)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and "FrameOfReferenceUID" not in ds
    (tmp_path / "ct").mkdir()
    shutil.copy2(src, tmp_path / "ct" / "slice.dcm")
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    centre = ipp + iop[:3] * dc * (ds.Columns - 1) / 2 + iop[3:] * dr * (ds.Rows - 1) / 2
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("image_path,coordX,coordY,coordZ\nct," + ",".join(f"{v:.3f}" for v in centre) + "\n")
    cfg = RunConfig(input=seeds, output=tmp_path / "out", input_kind=InputKind.SEEDS_CSV, export_qc=False)
    report = run(cfg, {}, extractor=extractor)
    assert report.n_ok == 1, [r.error for r in report.results] + [f.reason for f in report.failures]
    reasons = [f.reason for f in report.failures]
    assert any(" SR " in r and "--no-sr" in r and "FrameOfReferenceUID" in r for r in reasons), reasons
    assert any(" SEG " in r and "--no-seg" in r and "FrameOfReferenceUID" in r for r in reasons), reasons
