"""An enhanced CT whose ImageType says DERIVED (a perfusion map, not HU) is measured with a
warning in the plan (run.json ``warnings``); the original sample CT is not warned about."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import pydicom
from fmcib_testlib.dicom_builders import SAMPLE_SEG, copy_ct, read_ct_datasets
from pydicom.uid import generate_uid

from mhub_fmcib.dicom.calibration import calibration_warning
from mhub_fmcib.plan import plan_dicom_folder


def _enhanced(dest: Path) -> Path:
    dss = read_ct_datasets()[20:24]
    for d in dss:
        d.decompress(generate_instance_uid=False)
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=dss, series_instance_uid=generate_uid(), series_number=900,
        sop_instance_uid=generate_uid(), instance_number=1,
    )  # fmt: skip
    mf.ImageType = ["DERIVED", "PRIMARY", "PERFUSION", "NONE"]
    for item in mf.SharedFunctionalGroupsSequence[0].get("PixelValueTransformationSequence", []):
        item.RescaleType = "US"
    dest.parent.mkdir(parents=True, exist_ok=True)
    mf.save_as(dest)
    return dest


def test_derived_enhanced_ct_is_warned_about(tmp_path: Path) -> None:
    path = _enhanced(tmp_path / "mf.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.2" and ds.ImageType[0] == "DERIVED"
    warning = calibration_warning(path, "1.2.3")
    assert warning is not None
    assert "ImageType DERIVED\\PRIMARY\\PERFUSION\\NONE (not ORIGINAL)" in warning and "Hounsfield" in warning
    if "PixelValueTransformationSequence" in ds.SharedFunctionalGroupsSequence[0]:
        assert "RescaleType US (not HU)" in warning


def test_resliced_ct_is_not_warned_about_and_a_derived_map_is(tmp_path: Path) -> None:
    sample = sorted((SAMPLE_SEG.parents[1] / "ct").glob("*.dcm"))[0]
    assert list(pydicom.dcmread(sample, stop_before_pixels=True).ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert calibration_warning(sample, "x") is None  # single-frame DERIVED\\SECONDARY\\AXIAL: still HU
    assert plan_dicom_folder(SAMPLE_SEG.parents[1]).warnings == ()
    for p in copy_ct(tmp_path / "ct"):
        ds = pydicom.dcmread(p)
        ds.ImageType = ["DERIVED", "SECONDARY", "IODINE"]
        ds.save_as(p)
    shutil.copy2(SAMPLE_SEG, tmp_path / "seg.dcm")
    the_plan = plan_dicom_folder(tmp_path)
    [case] = the_plan.cases
    [warning] = the_plan.warnings
    assert warning.startswith(f"CT series {case.case_id} ") and "ImageType DERIVED\\SECONDARY\\IODINE" in warning


def test_rescale_type_not_hu_is_warned_about(tmp_path: Path) -> None:
    ds = pydicom.dcmread(sorted((SAMPLE_SEG.parents[1] / "ct").glob("*.dcm"))[0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleType = "US"
    ds.save_as(tmp_path / "x.dcm")
    warning = calibration_warning(tmp_path / "x.dcm", "1.2")
    assert warning is not None and "RescaleType US (not HU)" in warning and "ImageType" not in warning


def test_rescale_slope_zero_or_not_a_number_is_refused(tmp_path: Path) -> None:
    """Issue 15, point 11: RescaleSlope 0 on one slice (a constant image) or a slope that is
    not a finite number fails the series, naming the file and the value; the sample passes."""
    import pytest
    from pydicom import config

    from mhub_fmcib.dicom.calibration import check_rescale
    from mhub_fmcib.dicom.ct import assemble_ct
    from mhub_fmcib.dicom.index import InstanceKind, index_folder
    from mhub_fmcib.errors import CalibrationError

    paths = copy_ct(tmp_path / "ct")
    check_rescale(assemble_ct(index_folder(tmp_path / "ct").of_kind(InstanceKind.CT), decode=False))
    ds = pydicom.dcmread(paths[7])
    ds.RescaleSlope, ds.RescaleIntercept = 0, -1024
    ds.save_as(paths[7])
    ct = assemble_ct(index_folder(tmp_path / "ct").of_kind(InstanceKind.CT), decode=False)
    with pytest.raises(CalibrationError, match=rf"{paths[7]} has RescaleSlope 0, so every voxel would be -1024 HU"):
        check_rescale(ct)
    ds.RescaleSlope = 1
    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds["RescaleIntercept"].value = "nan"
        ds.save_as(paths[7])
    finally:
        config.settings.writing_validation_mode = old
    ct = assemble_ct(index_folder(tmp_path / "ct").of_kind(InstanceKind.CT), decode=False)
    with pytest.raises(CalibrationError, match=r"has RescaleIntercept nan, which is not a finite number"):
        check_rescale(ct)


def test_rescale_slope_zero_in_an_enhanced_ct_is_refused(tmp_path: Path) -> None:
    import pytest

    from mhub_fmcib.dicom.calibration import check_rescale
    from mhub_fmcib.dicom.ct import assemble_ct
    from mhub_fmcib.dicom.index import InstanceKind, index_folder
    from mhub_fmcib.errors import CalibrationError

    path = _enhanced(tmp_path / "mf" / "mf.dcm")
    ds = pydicom.dcmread(path)
    groups = [*ds.SharedFunctionalGroupsSequence, *ds.PerFrameFunctionalGroupsSequence]
    items = [t for g in groups for t in g.get("PixelValueTransformationSequence", [])]
    assert items, "the legacy-converted CT carries its rescale in functional groups"
    items[0].RescaleSlope = 0
    ds.save_as(path)
    with pytest.raises(CalibrationError, match=r"mf.dcm \((shared functional groups|frame 1)\) has RescaleSlope 0"):
        check_rescale(assemble_ct(index_folder(tmp_path / "mf").of_kind(InstanceKind.CT)))
