"""DICOM import: indexing an unsorted tree, assembling CT (checked against SimpleITK/GDCM),
refusing wrong geometry with messages naming the series, SEG masks on the CT grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from fmcib_testlib.dicom_builders import SAMPLE, SAMPLE_SEG, copy_ct, ct_files, make_seg, read_ct_datasets

from mhub_fmcib.dicom.ct import CtSeries, assemble_ct
from mhub_fmcib.dicom.index import InstanceKind, SkipReason, index_folder
from mhub_fmcib.dicom.seg import read_seg, segment_mask_on_ct
from mhub_fmcib.errors import GeometryError, SegmentationError
from mhub_fmcib.image_io import read_image, sitk_to_volume
from mhub_fmcib.plan import plan_dicom_folder


@pytest.fixture(scope="module")
def sample_ct() -> CtSeries:
    idx = index_folder(SAMPLE / "dicom" / "ct")
    return assemble_ct(idx.of_kind(InstanceKind.CT))


def test_ct_matches_simpleitk_gdcm(sample_ct: CtSeries) -> None:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SAMPLE / "dicom" / "ct")))
    ref = sitk_to_volume(reader.Execute())
    assert sample_ct.volume.shape == ref.shape == (512, 512, 48)
    np.testing.assert_array_equal(np.asarray(sample_ct.volume.array), np.asarray(ref.array, np.float32))
    np.testing.assert_allclose(sample_ct.volume.affine, ref.affine, atol=1e-4)
    nrrd = read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")
    np.testing.assert_array_equal(np.asarray(sample_ct.volume.array), np.asarray(nrrd.array, np.float32))
    np.testing.assert_allclose(sample_ct.volume.affine, nrrd.affine, atol=1e-4)


def test_unsorted_tree_with_junk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = ct_files()
    for i, p in enumerate(rng.permutation(len(files))):
        d = tmp_path / f"d{i % 5}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(files[p], d / f"x{rng.integers(1e9)}")
    shutil.copy2(SAMPLE_SEG, tmp_path / "d1" / "seg.bin")
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "truncated.dcm").write_bytes(files[0].read_bytes()[:300])
    other = pydicom.dcmread(files[0])
    other.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    other.Modality = "MR"
    other.save_as(tmp_path / "mr.dcm")
    scout = pydicom.dcmread(files[1])
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(tmp_path / "scout.dcm")
    idx = index_folder(tmp_path)
    reasons = {s.path.name: s.reason for s in idx.skipped}
    # a header cut after 300 bytes parses partially: it lacks its UIDs
    assert reasons.pop("truncated.dcm") in (SkipReason.UNREADABLE, SkipReason.MISSING_UIDS)
    assert reasons == {
        "notes.txt": SkipReason.NOT_DICOM,
        "mr.dcm": SkipReason.OTHER_OBJECT,
        "scout.dcm": SkipReason.LOCALIZER,
    }
    plan = plan_dicom_folder(tmp_path)
    assert len(plan.cases) == 1 and len(plan.cases[0].ct) == 48 and len(plan.cases[0].segs) == 1
    ct = assemble_ct(plan.cases[0].ct)
    ref = read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")
    np.testing.assert_array_equal(np.asarray(ct.volume.array), np.asarray(ref.array, np.float32))


def _edit(paths: list[Path], index: int, **changes: object) -> None:
    ds = pydicom.dcmread(paths[index])
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(paths[index])


def _series(tmp_path: Path) -> list[Path]:
    paths = copy_ct(tmp_path / "ct")
    return sorted(paths, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def _assemble(tmp_path: Path):  # type: ignore[no-untyped-def]
    return assemble_ct(index_folder(tmp_path / "ct").of_kind(InstanceKind.CT))


def test_missing_slice(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    paths[20].unlink()
    with pytest.raises(GeometryError, match=r"series .*missing slice"):
        _assemble(tmp_path)


def test_duplicate_position(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    ds = pydicom.dcmread(paths[10])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "ct" / "dup.dcm")
    with pytest.raises(GeometryError, match="duplicate slice position"):
        _assemble(tmp_path)


def test_non_uniform_spacing(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    ipp = [float(v) for v in pydicom.dcmread(paths[30]).ImagePositionPatient]
    _edit(paths, 30, ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.7])
    with pytest.raises(GeometryError, match="non-uniform spacing"):
        _assemble(tmp_path)


def test_mixed_orientation(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    _edit(paths, 5, ImageOrientationPatient=[0, 1, 0, 1, 0, 0])
    with pytest.raises(GeometryError, match="mixed orientations"):
        _assemble(tmp_path)


def test_gantry_tilt_refused(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.8 * k, z]
        ds.save_as(p)
    with pytest.raises(GeometryError, match="gantry tilt"):
        _assemble(tmp_path)


def test_missing_geometry_tag(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    ds = pydicom.dcmread(paths[3])
    del ds.ImagePositionPatient
    ds.save_as(paths[3])
    with pytest.raises(GeometryError, match="no ImagePositionPatient"):
        _assemble(tmp_path)


def test_rescale_slope_intercept_applied(tmp_path: Path) -> None:
    paths = _series(tmp_path)
    ds = pydicom.dcmread(paths[0])
    ds.decompress()
    raw = ds.pixel_array.astype(np.int32)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -2048
    ds.save_as(paths[0])
    ct = _assemble(tmp_path)
    np.testing.assert_array_equal(np.asarray(ct.volume.array)[:, :, 0], (raw * 2 - 2048).T.astype(np.float32))


def test_seg_on_ct_grid_equals_label(sample_ct: CtSeries) -> None:
    seg = read_seg(SAMPLE_SEG)
    assert [(s.number, s.label) for s in seg.segments] == [(1, "Nodule")]
    assert seg.segments[0].property_type == ("27925004", "SCT", "Nodule")
    mask = segment_mask_on_ct(seg, 1, sample_ct)
    label = np.asarray(read_image(SAMPLE / "nrrd" / "lung1_label.nrrd").array) == 1
    assert mask.sum() == 837
    np.testing.assert_array_equal(mask, label)


def test_seg_with_other_frame_of_reference_refused(tmp_path: Path, sample_ct: CtSeries) -> None:
    label = np.asarray(read_image(SAMPLE / "nrrd" / "lung1_label.nrrd").array) == 1
    p = make_seg(read_ct_datasets(), {"n": label}, tmp_path / "seg.dcm", frame_of_reference_uid="1.2.3.4")
    with pytest.raises(SegmentationError, match=r"not in the\s+Frame of Reference|Frame of Reference"):
        segment_mask_on_ct(read_seg(p), 1, sample_ct)


def test_only_the_slices_the_patch_reads_are_decoded(sample_ct: CtSeries) -> None:
    """The pipeline's lazy path: geometry first (a NaN placeholder, no memory), then only the
    slices the patch reads; the patch equals the one from the fully decoded series."""
    from mhub_fmcib.dicom.ct import decode_slices
    from mhub_fmcib.patch import extract_patch, slab_offset
    from mhub_fmcib.pipeline import slices_needed
    from mhub_fmcib.records import SeedPoint

    records = index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT)
    lazy = assemble_ct(records, decode=False)
    assert lazy.decoded == frozenset()
    assert lazy.volume.shape == sample_ct.volume.shape
    np.testing.assert_array_equal(lazy.volume.affine, sample_ct.volume.affine)
    assert lazy.volume.array.strides == (0, 0, 0) and np.isnan(lazy.volume.array[0, 0, 0])
    nodule = SeedPoint(-21.858572, -120.535814, -611.496416)  # sample_data/README.md
    outside = SeedPoint(900.0, 0.0, 0.0)
    needed = slices_needed(lazy.volume, [nodule, outside])
    assert 10 <= len(needed) <= 13  # 5 mm slices, a 50 mm patch; the outside seed needs none
    part = decode_slices(lazy, needed)
    assert part.decoded == frozenset(needed)
    # only the needed slices are allocated: one slab per run, with its own affine
    assert part.volume.array.strides == (0, 0, 0)
    assert sum(s.shape[2] for s in part.slabs) == len(needed)
    full = np.asarray(sample_ct.volume.array)
    for slab in part.slabs:
        k0 = slab_offset(part.volume, slab)
        np.testing.assert_array_equal(slab.array, full[:, :, k0 : k0 + slab.shape[2]])
        np.testing.assert_allclose(slab.origin, sample_ct.volume.index_to_lps([0, 0, k0]), atol=1e-9)
    assert part.hu_range == (float(full[:, :, sorted(needed)].min()), float(full[:, :, sorted(needed)].max()))
    np.testing.assert_array_equal(
        extract_patch(part.volume, nodule, slabs=part.slabs).array, extract_patch(sample_ct.volume, nodule).array
    )
    assert all("PixelData" not in ds for ds in part.datasets)
    with pytest.raises(ValueError, match="already called"):
        decode_slices(part, [0])


def test_index_reads_header_values_as_pydicom_converts_them(tmp_path: Path) -> None:
    """The index reads its text values from the stored bytes (no pydicom conversion): the
    record equals pydicom's converted values, for explicit and implicit VR files, UIDs
    padded with NUL, multi-valued ImageType, NumberOfFrames and the SEG and RTSTRUCT objects."""
    import copy

    from fmcib_testlib.rtstruct_builders import RoiSpec, make_rtstruct
    from pydicom.uid import ImplicitVRLittleEndian

    from mhub_fmcib.dicom.index import read_record

    cts = read_ct_datasets()
    src = cts[0]
    variants = {}
    implicit = copy.deepcopy(src)
    implicit.decompress()
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    variants["implicit.dcm"] = implicit
    padded = copy.deepcopy(src)
    padded.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    padded.SOPInstanceUID = padded.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.99.1"
    padded.NumberOfFrames = 1
    variants["padded.dcm"] = padded
    localizer = copy.deepcopy(src)
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "localizer"]
    variants["localizer.dcm"] = localizer
    for name, ds in variants.items():
        ds.save_as(tmp_path / name, enforce_file_format=True)
    # the odd-length UID is padded with a NUL on disk
    assert b"1.2.826.0.1.3680043.2.1125.99.1\x00" in (tmp_path / "padded.dcm").read_bytes()

    files = [tmp_path / "implicit.dcm", tmp_path / "padded.dcm", SAMPLE_SEG, *ct_files()[:3]]
    square = np.array([[-30.0, -130.0], [-10.0, -130.0], [-10.0, -110.0], [-30.0, -110.0]])
    z = float(cts[24].ImagePositionPatient[2])
    contour = np.column_stack([square, np.full(4, z)])
    files.append(make_rtstruct(cts, [RoiSpec("Box", [("CLOSED_PLANAR", contour)])], tmp_path / "rt.dcm"))
    for path in files:
        rec = read_record(path)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert not hasattr(rec, "reason"), (path, rec)
        assert rec.sop_class_uid == ds.SOPClassUID
        assert rec.sop_instance_uid == ds.SOPInstanceUID
        assert rec.study_instance_uid == ds.StudyInstanceUID
        assert rec.series_instance_uid == ds.SeriesInstanceUID
        assert rec.modality == ds.Modality
        assert rec.number_of_frames == int(ds.get("NumberOfFrames", 1) or 1)
        if "FrameOfReferenceUID" in ds:
            assert rec.frame_of_reference_uid == ds.FrameOfReferenceUID
    skipped = read_record(tmp_path / "localizer.dcm")
    assert getattr(skipped, "reason", None) is SkipReason.LOCALIZER


def test_corrupt_compressed_slice_fails_only_if_a_patch_reads_it(tmp_path: Path) -> None:
    """A JPEG-LS stream that cannot be decoded fails the case when a patch reads its slice
    (DicomImportError naming the file); in a slice no patch reads it is never decompressed,
    and the patch is the one of the intact series."""
    from pydicom.encaps import encapsulate

    from mhub_fmcib.dicom.ct import decode_slices
    from mhub_fmcib.errors import DicomImportError
    from mhub_fmcib.patch import extract_patch
    from mhub_fmcib.pipeline import slices_needed
    from mhub_fmcib.records import SeedPoint

    nodule = SeedPoint(-21.858572, -120.535814, -611.496416)  # sample_data/README.md
    intact = assemble_ct(index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT))
    needed = slices_needed(intact.volume, [nodule])
    datasets = read_ct_datasets()  # sorted along z like the volume's k
    rng = np.random.default_rng(5)
    for name, k in (("far", 0 if 0 not in needed else len(datasets) - 1), ("near", min(needed) + 2)):
        assert (k in needed) == (name == "near")
        folder = tmp_path / name
        folder.mkdir()
        for i, ds in enumerate(datasets):
            if i == k:
                ds = pydicom.dcmread(ds.filename)
                ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + rng.bytes(4000)])
            ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
        lazy = assemble_ct(index_folder(folder).of_kind(InstanceKind.CT), decode=False)
        if name == "near":
            with pytest.raises(DicomImportError, match=f"{k:03d}.dcm cannot be decoded"):
                decode_slices(lazy, needed)
        else:
            part = decode_slices(lazy, needed)
            np.testing.assert_array_equal(
                extract_patch(part.volume, nodule, slabs=part.slabs).array, extract_patch(intact.volume, nodule).array
            )
