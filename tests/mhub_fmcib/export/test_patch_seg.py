"""Patch region SEG: validity, and the cubes read back equal an independent rasterisation
computed from the CT headers (IPP, IOP, PixelSpacing) alone."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from mhub_fmcib.export import ExportError, build_patch_region_seg, write_seg
from mhub_fmcib.records import Lesion, LesionResult, LesionStatus, Patch, SeedPoint, SeedSource

NODULE = SeedPoint(-21.858572, -120.535814, -611.496416)


def expected_frames(ct: list[pydicom.Dataset], patch: Patch) -> npt.NDArray[np.bool_]:
    """(frames, rows, cols): pixel centres from each header inside the cube [min, max)."""
    c = patch.corners_lps()
    lo, hi = c.min(axis=0), c.max(axis=0)
    out = []
    for ds in ct:
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        row_dir, col_dir = iop[:3], iop[3:]
        dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
        r, k = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        pts = np.array(ds.ImagePositionPatient, dtype=float) + k[..., None] * dc * row_dir + r[..., None] * dr * col_dir
        out.append(np.all((pts >= lo) & (pts < hi), axis=-1))
    return np.stack(out)


def read_frames(path: Path, ct: list[pydicom.Dataset], segment: int) -> npt.NDArray[np.bool_]:
    seg = hd.seg.segread(path)
    px = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in ct],
        segment_numbers=[segment],
        ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True,
    )
    return px[..., 0].astype(bool)


def test_sample_seg_holds_the_cube(  # type: ignore[no-untyped-def]
    tmp_path: Path, sample_ct, sample_volume, provenance, result_factory, dciodvfy
) -> None:
    rng = np.random.default_rng(1)
    res = result_factory(sample_volume, sample_ct[0], "nodule", NODULE, rng)
    out = build_patch_region_seg(sample_ct, sample_volume, [res], provenance)
    assert out.dataset is not None
    assert out.segments == (("nodule", 1),)
    assert out.skipped == ()
    path = write_seg(out.dataset, tmp_path, sample_ct[0].SeriesInstanceUID)
    assert path.parent == tmp_path / "dicom" / sample_ct[0].StudyInstanceUID / sample_ct[0].SeriesInstanceUID
    problems, allowed = dciodvfy(path)
    assert problems == []
    assert allowed == 0
    got = read_frames(path, sample_ct, 1)
    want = expected_frames(sample_ct, res.patch)
    np.testing.assert_array_equal(got, want)
    # 50 mm / 0.5703 mm = 87.7 -> 87 or 88 columns and rows; 50 mm / 5 mm = 10 slices.
    frames = np.flatnonzero(got.any(axis=(1, 2)))
    assert len(frames) == 10
    rows = np.flatnonzero(got.any(axis=(0, 2)))
    assert len(rows) in (87, 88)
    back = pydicom.dcmread(path)
    assert back.FrameOfReferenceUID == sample_ct[0].FrameOfReferenceUID
    # the SEG references the 10 CT images the cube reaches (its source images), not all 48
    (series,) = back.ReferencedSeriesSequence
    referenced = {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence}
    reached = {sample_ct[i].SOPInstanceUID for i in range(len(sample_ct)) if got[i].any()}
    assert referenced == reached and len(reached) == 10
    assert back.NumberOfFrames == 10
    assert back.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert back.SegmentSequence[0].SegmentAlgorithmName == "mhub-fmcib FMCIB encoder"
    again = build_patch_region_seg(sample_ct, sample_volume, [res], provenance).dataset
    assert again is not None
    assert again.SOPInstanceUID == back.SOPInstanceUID


def test_multi_lesion_edge_and_outside(  # type: ignore[no-untyped-def]
    tmp_path: Path, provenance, ct_factory, result_factory, dciodvfy
) -> None:
    cts, vol = ct_factory(anonymised=True)
    rng = np.random.default_rng(2)
    inside = result_factory(vol, cts[0], "centre", SeedPoint(0.0, 0.0, 0.0), rng)
    edge = result_factory(vol, cts[0], "corner", SeedPoint(37.0, 39.0, 12.0), rng)
    p = edge.patch
    far_affine = np.array(p.affine)
    far_affine[:3, 3] += 500.0
    far = LesionResult(
        lesion=Lesion("far away", SeedPoint(537.0, 539.0, 512.0), SeedSource.USER),
        status=LesionStatus.OK,
        features=edge.features,
        patch=Patch(np.asarray(p.array), far_affine, p.valid),
    )
    failed = LesionResult(
        lesion=Lesion("x", SeedPoint(0, 0, 0), SeedSource.USER),
        status=LesionStatus.FAILED,
        error="boom",
    )
    out = build_patch_region_seg(cts, vol, [inside, failed, edge, far], provenance)
    assert out.segments == (("centre", 1), ("corner", 2))
    assert [s[0] for s in out.skipped] == ["far away"]
    assert "no CT voxel" in out.skipped[0][1]
    assert out.dataset is not None
    path = write_seg(out.dataset, tmp_path, cts[0].SeriesInstanceUID)
    problems, _ = dciodvfy(path)
    assert [p for p in problems if "needed to build DICOMDIR" not in p] == []
    for number, res in ((1, inside), (2, edge)):
        got = read_frames(path, cts, number)
        np.testing.assert_array_equal(got, expected_frames(cts, res.patch))
    corner = read_frames(path, cts, 2)
    # the corner cube is clipped by the volume: fewer voxels than a full 50 mm cube
    assert 0 < corner.sum() < 25 * 25 * 17


def test_volume_must_match_the_datasets(  # type: ignore[no-untyped-def]
    provenance, ct_factory, result_factory
) -> None:
    cts, vol = ct_factory()
    _other_cts, other_vol = ct_factory(origin=(-41.0, -30.0, -20.0))
    res = result_factory(vol, cts[0], "a", SeedPoint(0.0, 0.0, 0.0), np.random.default_rng(0))
    with pytest.raises(ExportError, match="is not a slice of the given volume"):
        build_patch_region_seg(cts, other_vol, [res], provenance)
    empty = build_patch_region_seg(cts, vol, [], provenance)
    assert empty.dataset is None
    assert empty.segments == ()


def test_label_map_and_stacked_frames_give_the_same_seg(  # type: ignore[no-untyped-def]
    sample_ct, sample_volume, provenance, result_factory
) -> None:
    """Cubes that share no voxel go to highdicom as a label map (fast); the SEG equals the
    one built from one binary stack per segment. Overlapping cubes use the stack."""
    rng = np.random.default_rng(3)
    apart = [
        result_factory(sample_volume, sample_ct[0], "a", NODULE, rng),
        result_factory(sample_volume, sample_ct[0], "b", SeedPoint(60.0, -100.0, -600.0), rng),
    ]
    label = build_patch_region_seg(sample_ct, sample_volume, apart, provenance).dataset
    stack = build_patch_region_seg(sample_ct, sample_volume, apart, provenance, stacked=True).dataset
    assert label is not None and stack is not None
    assert label.SegmentsOverlap == stack.SegmentsOverlap == "NO"
    for kw in (
        "PixelData",
        "NumberOfFrames",
        "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
        "SegmentSequence",
        "ReferencedSeriesSequence",
        "SOPInstanceUID",
    ):
        assert label[kw] == stack[kw], kw
    near = SeedPoint(NODULE.x + 10.0, NODULE.y, NODULE.z)
    overlapping = [apart[0], result_factory(sample_volume, sample_ct[0], "c", near, rng)]
    both = build_patch_region_seg(sample_ct, sample_volume, overlapping, provenance).dataset
    assert both is not None and both.SegmentsOverlap == "YES"
