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


def read_box(patch: Patch, full: bool = False) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """LPS [lo, hi) of the patch voxels that came from the image (``valid``), or of the whole
    cube: the centres of the first and last voxel along each axis +- 0.5 mm (1 mm voxels,
    axes along +S, +P, +L)."""
    ranges = [(0, n) for n in patch.array.shape] if full else list(patch.valid)
    first = patch.affine @ np.array([ranges[0][0], ranges[1][0], ranges[2][0], 1.0])
    last = patch.affine @ np.array([ranges[0][1] - 1, ranges[1][1] - 1, ranges[2][1] - 1, 1.0])
    return np.minimum(first, last)[:3] - 0.5, np.maximum(first, last)[:3] + 0.5


def expected_frames(ct: list[pydicom.Dataset], patch: Patch, full: bool = False) -> npt.NDArray[np.bool_]:
    """(frames, rows, cols): pixel centres from each header inside the read region [lo, hi)."""
    lo, hi = read_box(patch, full)
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
    # ... and the encoder read less than the cube's part inside the CT: the crop was clamped
    # at the image border and padded on both sides, so CT voxels on the far side of the
    # cube are padding in the patch, not in the SEG.
    assert edge.patch.valid != ((0, 50), (0, 50), (0, 50))
    full = expected_frames(cts, edge.patch, full=True)
    assert corner.sum() < full.sum()
    assert not np.any(corner & ~full)
    # every marked voxel's nearest patch voxel came from the image (never padding)
    inv = np.linalg.inv(edge.patch.affine)
    for f, ds in enumerate(cts):
        rows, cols = np.nonzero(corner[f])
        if rows.size == 0:
            continue
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        pts = (
            np.array(ds.ImagePositionPatient, dtype=float) + cols[:, None] * dc * iop[:3] + rows[:, None] * dr * iop[3:]
        )
        idx = np.floor((np.c_[pts, np.ones(len(pts))] @ inv.T)[:, :3] + 0.5).astype(int)
        for axis, (a, b) in enumerate(edge.patch.valid):
            assert np.all((idx[:, axis] >= a) & (idx[:, axis] < b))


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


def test_cube_offset_from_seed(sample_volume) -> None:  # type: ignore[no-untyped-def]
    """docs/outputs.md: the seed index is truncated and the crop is [c - 25, c + 25), so the
    cube's centre lies 0.5 to 1.5 mm before the seed along each of L, P, S."""
    from mhub_fmcib.patch import extract_patch

    rng = np.random.default_rng(0)
    for s in rng.uniform([-60, -150, -640], [60, -80, -580], size=(50, 3)):
        seed = SeedPoint(*map(float, s))
        c = extract_patch(sample_volume, seed).corners_lps()
        offset = (c.min(axis=0) + c.max(axis=0)) / 2 - seed.as_array()
        assert np.all((offset > -1.5) & (offset <= -0.5)), offset


def test_overlapping_cubes_in_shuffled_slices_read_back_exactly(  # type: ignore[no-untyped-def]
    tmp_path: Path, sample_ct, sample_volume, provenance, result_factory, dciodvfy
) -> None:
    """Six overlapping cubes (the binary-stack path) with the CT instances given out of
    slice order: every segment read back equals the rasterisation from the headers."""
    rng = np.random.default_rng(5)
    seeds = [SeedPoint(NODULE.x + dx, NODULE.y + dy, NODULE.z + dz) for dx, dy, dz in rng.uniform(-20, 20, (6, 3))]
    results = [result_factory(sample_volume, sample_ct[0], f"l{n}", s, rng) for n, s in enumerate(seeds)]
    shuffled = [sample_ct[i] for i in rng.permutation(len(sample_ct))]
    out = build_patch_region_seg(shuffled, sample_volume, results, provenance)
    assert out.dataset is not None and out.dataset.SegmentsOverlap == "YES"
    path = write_seg(out.dataset, tmp_path, sample_ct[0].SeriesInstanceUID)
    problems, _ = dciodvfy(path)
    assert problems == []
    for number, res in enumerate(results, start=1):
        np.testing.assert_array_equal(read_frames(path, sample_ct, number), expected_frames(sample_ct, res.patch))


def test_overlapping_cubes_stack_is_bounded() -> None:
    """Issue 15.12: cubes are kept as blocks; overlapping cubes need highdicom's dense
    (frames, rows, columns, segments) stack, built only up to MAX_STACK_BYTES; beyond,
    StackTooLargeError names the sizes (the lesions are then split over several SEGs;
    before: 500 cubes took 13.5 GiB)."""
    from mhub_fmcib.export.patch_seg import MAX_STACK_BYTES, CubeBox, StackTooLargeError, _frames

    shape = (512, 512, 48)
    inside = np.ones((4, 3, 2), dtype=bool)
    two = [CubeBox((10, 20, 5), inside), CubeBox((12, 21, 6), inside)]  # overlapping
    stack = _frames(two, list(range(4, 9)), shape, False, "1.2.3")
    assert stack.shape == (5, 512, 512, 2) and stack.dtype == np.uint8
    assert stack[1:3, 20:23, 10:14, 0].all()  # frames 1-2 = slices 5-6; rows j, columns i
    np.testing.assert_array_equal(np.argwhere(stack[..., 1]).min(axis=0), [2, 21, 12])
    assert int(stack.sum()) == 2 * inside.sum()
    n = MAX_STACK_BYTES // (48 * 512 * 512) + 1
    many = [CubeBox((100 + i % 3, 100, 0), np.ones((60, 60, 48), dtype=bool)) for i in range(n)]
    with pytest.raises(StackTooLargeError, match=r"overlap.*GiB in memory"):
        _frames(many, list(range(48)), shape, False, "1.2.3")
    label = _frames(two[:1] + [CubeBox((200, 200, 5), inside)], list(range(4, 9)), shape, False, "1.2.3")
    assert label.shape == (5, 512, 512) and set(np.unique(label).tolist()) == {0, 1, 2}  # disjoint: a label map


def test_overlapping_cubes_above_the_bound_are_split_over_several_segs(  # type: ignore[no-untyped-def]
    tmp_path: Path, sample_ct, sample_volume, provenance, result_factory, dciodvfy
) -> None:
    """Overlapping cubes whose stack exceeds the bound go into several SEGs of one series
    (instead of none): every lesion in exactly one part, each part valid, each segment read
    back equal to the rasterisation; within the bound the single SEG is the unsplit one."""
    from mhub_fmcib.export import build_patch_region_segs
    from mhub_fmcib.export.layout import seg_file_name

    rng = np.random.default_rng(7)
    seeds = [SeedPoint(NODULE.x + dx, NODULE.y + dy, NODULE.z + dz) for dx, dy, dz in rng.uniform(-15, 15, (5, 3))]
    results = [result_factory(sample_volume, sample_ct[0], f"l{n}", s, rng) for n, s in enumerate(seeds)]
    single = build_patch_region_segs(sample_ct, sample_volume, results, provenance)
    assert len(single) == 1 and single[0].dataset is not None and single[0].dataset.SegmentsOverlap == "YES"
    whole = build_patch_region_seg(sample_ct, sample_volume, results, provenance)
    assert whole.dataset is not None
    assert single[0].dataset.SOPInstanceUID == whole.dataset.SOPInstanceUID
    assert single[0].dataset.PixelData == whole.dataset.PixelData

    frame = sample_ct[0].Rows * sample_ct[0].Columns
    parts = build_patch_region_segs(sample_ct, sample_volume, results, provenance, max_stack_bytes=2 * 12 * frame)
    assert len(parts) >= 3
    seen: list[str] = []
    for n, part in enumerate(parts, start=1):
        ds = part.dataset
        assert ds is not None
        assert ds.SeriesInstanceUID == whole.dataset.SeriesInstanceUID and int(ds.InstanceNumber) == n
        assert 1 <= len(part.segments) <= 2
        path = write_seg(ds, tmp_path, sample_ct[0].SeriesInstanceUID, seg_file_name(n, len(parts)))
        assert path.name == f"fmcib_patch_region_SEG_part{n}of{len(parts)}.dcm"
        problems, _ = dciodvfy(path)
        assert problems == []
        for lesion_id, number in part.segments:
            res = results[int(lesion_id[1:])]
            np.testing.assert_array_equal(read_frames(path, sample_ct, number), expected_frames(sample_ct, res.patch))
            seen.append(lesion_id)
    assert sorted(seen) == sorted(r.lesion.lesion_id for r in results)
    assert len({p.dataset.SOPInstanceUID for p in parts if p.dataset is not None}) == len(parts)
    with pytest.raises(ExportError, match="one lesion's cube alone"):
        build_patch_region_segs(sample_ct, sample_volume, results, provenance, max_stack_bytes=frame)


def test_split_segs_are_built_and_written_one_at_a_time(  # type: ignore[no-untyped-def]
    tmp_path: Path, sample_ct, sample_volume, provenance, result_factory, monkeypatch
) -> None:
    """The exporter never holds two parts of a split SEG (issue 18: 500 lesions were six
    parts of ~30 MB held until all were written): when a part is being built, every part
    before it has been written and is gone from memory; the parts are those of
    :func:`build_patch_region_segs`, named ``..._part<n>of<N>.dcm``."""
    from fmcib_testlib.alive import BuildTracker

    from mhub_fmcib.export import patch_seg
    from mhub_fmcib.export.atomic import write_each

    rng = np.random.default_rng(7)
    seeds = [SeedPoint(NODULE.x + dx, NODULE.y + dy, NODULE.z + dz) for dx, dy, dz in rng.uniform(-15, 15, (5, 3))]
    results = [result_factory(sample_volume, sample_ct[0], f"l{n}", s, rng) for n, s in enumerate(seeds)]
    bound = 2 * 12 * sample_ct[0].Rows * sample_ct[0].Columns
    at_once = patch_seg.build_patch_region_segs(sample_ct, sample_volume, results, provenance, max_stack_bytes=bound)
    tracker = BuildTracker(monkeypatch, patch_seg, "_build_part")
    parts = patch_seg.iter_patch_region_segs(sample_ct, sample_volume, results, provenance, max_stack_bytes=bound)
    series_uid = str(sample_ct[0].SeriesInstanceUID)
    paths = write_each(parts, lambda part: write_seg(part.dataset, tmp_path, series_uid, part.file_name))
    n = len(at_once)
    assert n >= 3 and tracker.alive_at_build == [0] * (n + 1)  # the unsplit attempt, then n parts
    assert [p.name for p in paths] == [f"fmcib_patch_region_SEG_part{i}of{n}.dcm" for i in range(1, n + 1)]
    for path, part in zip(paths, at_once, strict=True):
        back = pydicom.dcmread(path)
        assert part.dataset is not None and back.SOPInstanceUID == part.dataset.SOPInstanceUID
        assert back.PixelData == part.dataset.PixelData
