"""Our local patch equals the whole-volume MONAI reference (max abs diff ≤ 1e-5) on the
real sample CT, for seeds in the lesion, near every face and corner, and for anisotropic,
flipped-direction and oblique images."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from fmcib_testlib.reference_pipeline import reference_patch

from mhub_fmcib.errors import SeedError
from mhub_fmcib.image_io import read_image
from mhub_fmcib.patch import extract_patch, normalise_hu, read_window, reference_grid
from mhub_fmcib.records import SeedPoint, Volume

TOL = 1e-5


@pytest.fixture(scope="module")
def lung1(sample_dir: Path) -> Volume:
    return read_image(sample_dir / "nrrd" / "lung1_image.nrrd")


@pytest.fixture(scope="module")
def nodule_seed(sample_dir: Path, lung1: Volume) -> SeedPoint:
    lab = read_image(sample_dir / "nrrd" / "lung1_label.nrrd")
    return SeedPoint(*lung1.index_to_lps(np.argwhere(np.asarray(lab.array) == 1).mean(0)))


@pytest.fixture(scope="module")
def small(lung1: Volume) -> Volume:
    """A 160×140×20 sub-volume of the real CT around the nodule (same geometry rules)."""
    i0, j0, k0 = 220, 150, 14
    arr = np.asarray(lung1.array)[i0 : i0 + 160, j0 : j0 + 140, k0 : k0 + 20]
    aff = lung1.affine.copy()
    aff[:3, 3] = lung1.index_to_lps([i0, j0, k0])
    return Volume(arr, aff)


def flipped(v: Volume, axes: tuple[int, ...]) -> Volume:
    """The same physical image stored with reversed axes (negative direction cosines)."""
    arr = np.asarray(v.array)
    aff = v.affine.copy()
    for a in axes:
        arr = np.flip(arr, axis=a)
        aff[:3, 3] = aff[:3, 3] + aff[:3, a] * (v.shape[a] - 1)
        aff[:3, a] = -aff[:3, a]
    return Volume(np.ascontiguousarray(arr), aff)


def rotated(v: Volume, degrees: float) -> Volume:
    """The same voxels with an oblique (rotated about z) direction matrix."""
    t = np.deg2rad(degrees)
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = v.affine.copy()
    aff[:3, :3] = r @ aff[:3, :3]
    return Volume(np.asarray(v.array), aff)


def boundary_seeds(v: Volume, inset: float = 1.3) -> list[SeedPoint]:
    """Seeds near the centre of each of the 6 faces and at each of the 8 corners."""
    n = np.asarray(v.shape, dtype=float) - 1
    mid = n / 2
    pts = []
    for axis in range(3):
        for end in (inset, n[axis] - inset):
            p = mid.copy()
            p[axis] = end
            pts.append(p)
    for corner in itertools.product(*[(inset, n[a] - inset) for a in range(3)]):
        pts.append(np.array(corner))
    return [SeedPoint(*v.index_to_lps(p)) for p in pts]


def assert_same(v: Volume, seed: SeedPoint) -> None:
    ours = extract_patch(v, seed)
    ref = reference_patch(v, seed)
    assert ours.array.shape == ref.shape == (50, 50, 50)
    diff = float(np.abs(ours.array - ref).max())
    assert diff <= TOL, f"max abs diff {diff} at seed {seed}"


def test_lesion_seed_full_volume(lung1: Volume, nodule_seed: SeedPoint) -> None:
    ours = extract_patch(lung1, nodule_seed)
    ref = reference_patch(lung1, nodule_seed)
    assert np.abs(ours.array - ref).max() <= TOL
    # the nodule is bright: the centre of the patch is well above lung density
    assert ours.array[22:28, 22:28, 22:28].mean() > normalise_hu(-400)
    assert ours.valid == ((0, 50), (0, 50), (0, 50))


@pytest.mark.parametrize("which", ["faces_and_corners"])
def test_faces_and_corners_full_volume(lung1: Volume, which: str) -> None:
    # two faces and two corners on the full 512×512×48 volume (the rest on sub-volumes)
    seeds = boundary_seeds(lung1)
    for s in (seeds[0], seeds[5], seeds[6], seeds[13]):
        assert_same(lung1, s)


@pytest.mark.parametrize("axes", [(), (0,), (1,), (2,), (0, 1, 2)])
def test_faces_and_corners_flipped(small: Volume, axes: tuple[int, ...]) -> None:
    v = flipped(small, axes)
    for s in boundary_seeds(v):
        assert_same(v, s)


def test_flip_does_not_change_the_patch(small: Volume) -> None:
    """Flipping the storage order is the same physical image: the patch must not change."""
    seed = SeedPoint(*small.index_to_lps([80.4, 70.7, 10.2]))
    a = extract_patch(small, seed).array
    for axes in [(0,), (2,), (0, 1, 2)]:
        assert np.abs(extract_patch(flipped(small, axes), seed).array - a).max() <= TOL


def test_anisotropic_and_oblique(small: Volume) -> None:
    aniso = Volume(np.asarray(small.array), small.affine @ np.diag([1.7, 0.8, 0.6, 1.0]))
    for s in boundary_seeds(aniso)[:8]:
        assert_same(aniso, s)
    obl = rotated(small, 17.0)
    rng = np.random.default_rng(3)
    for p in rng.uniform([0, 0, 0], np.asarray(obl.shape) - 1, size=(4, 3)):
        assert_same(obl, SeedPoint(*obl.index_to_lps(p)))


def test_random_seeds_including_just_outside(small: Volume) -> None:
    rng = np.random.default_rng(7)
    n = np.asarray(small.shape) - 1
    for p in rng.uniform(-5, n + 5, size=(10, 3)):
        assert_same(small, SeedPoint(*small.index_to_lps(p)))


def test_patch_affine_locates_voxels(small: Volume) -> None:
    """The patch's affine maps each patch voxel to where its value came from."""
    seed = SeedPoint(*small.index_to_lps([60.0, 50.0, 8.0]))
    patch = extract_patch(small, seed)
    grid = reference_grid(small)
    # voxel (25, 25, 25) lies 1 mm steps from the grid origin and inside the volume
    lps = patch.affine @ np.array([25, 25, 25, 1.0])
    ijk = np.linalg.inv(grid.affine_lps) @ lps
    assert np.allclose(ijk[:3], np.round(ijk[:3]))
    # seed is within one voxel of the patch centre (index truncation)
    centre = np.linalg.inv(patch.affine) @ np.append(seed.as_array(), 1.0)
    assert np.all(np.abs(centre[:3] - 25) <= 1.0)


def test_seed_far_outside_is_refused_with_ras_hint(lung1: Volume, nodule_seed: SeedPoint) -> None:
    ras = SeedPoint(-nodule_seed.x, -nodule_seed.y, nodule_seed.z)
    with pytest.raises(SeedError, match="RAS"):
        extract_patch(lung1, ras)
    with pytest.raises(SeedError, match="outside the image"):
        extract_patch(lung1, SeedPoint(0.0, 0.0, 5000.0))


def test_normalisation_does_not_clip() -> None:
    assert normalise_hu(np.array([-3024.0]))[0] == pytest.approx(-0.6510417, abs=1e-6)
    assert normalise_hu(np.array([4000.0]))[0] == pytest.approx(1.6354166, abs=1e-6)


def _only_window(v: Volume, seed: SeedPoint) -> Volume:
    """``v`` with every voxel outside ``read_window(v, seed)`` replaced by NaN."""
    window = read_window(v, seed)
    arr = np.full(v.shape, np.nan, dtype=np.float32)
    arr[window] = np.asarray(v.array)[window]
    return Volume(arr, v.affine)


def test_read_window_holds_every_voxel_the_patch_reads(small: Volume) -> None:
    """A NaN anywhere the patch reads would reach the patch (0 x NaN is NaN): with only the
    window kept, the patch is identical, for faces, corners, random and just-outside seeds,
    flipped, anisotropic and oblique grids; the window is much smaller than the volume."""
    rng = np.random.default_rng(11)
    volumes = [
        small,
        flipped(small, (0, 2)),
        Volume(np.asarray(small.array), small.affine @ np.diag([1.7, 0.8, 0.6, 1.0])),
        rotated(small, 17.0),
    ]
    for v in volumes:
        n = np.asarray(v.shape) - 1
        seeds = boundary_seeds(v)[::3] + [SeedPoint(*v.index_to_lps(p)) for p in rng.uniform(-5, n + 5, (4, 3))]
        for seed in seeds:
            try:
                full = extract_patch(v, seed)
            except SeedError:
                with pytest.raises(SeedError):
                    read_window(v, seed)
                continue
            part = extract_patch(_only_window(v, seed), seed)
            np.testing.assert_array_equal(part.array, full.array)
            np.testing.assert_array_equal(part.affine, full.affine)
    w = read_window(small, SeedPoint(*small.index_to_lps([80.0, 70.0, 10.0])))
    sizes = [s.stop - s.start for s in w]
    assert sizes[0] < small.shape[0] and sizes[1] < small.shape[1]  # 50 mm of a 91 x 80 mm slab


def test_read_window_on_the_full_ct_reads_few_slices(lung1: Volume, nodule_seed: SeedPoint) -> None:
    """The sample CT has 5 mm slices: a 50 mm patch reads 11-12 of its 48."""
    window = read_window(lung1, nodule_seed)
    k = window[2]
    assert 10 <= k.stop - k.start <= 13
    assert k.start <= lung1.lps_to_index(nodule_seed.as_array())[2] < k.stop


def slab_of(v: Volume, start: int, stop: int) -> Volume:
    """Slices ``[start, stop)`` of ``v`` as a Volume with its own affine (a copy: no view
    of ``v``'s array)."""
    aff = v.affine.copy()
    aff[:3, 3] = v.index_to_lps([0.0, 0.0, float(start)])
    return Volume(np.array(np.asarray(v.array)[:, :, start:stop], order="F"), aff)


def placeholder(v: Volume) -> Volume:
    """``v``'s geometry with a NaN array that takes no memory (what the pipeline keeps)."""
    return Volume(np.broadcast_to(np.float32(np.nan), v.shape), v.affine)


def test_slab_path_is_bit_identical_and_the_slab_covers_the_patch(small: Volume, lung1: Volume) -> None:
    """Issue 15.12: the patch read from slabs (runs of decoded slices, each with its own
    affine) inside a geometry-only volume equals the whole-volume patch bit for bit, for
    faces, corners, random and just-outside seeds on flipped, anisotropic and oblique grids;
    the slab of exactly the read window's slices suffices, a slab one slice short is refused."""
    rng = np.random.default_rng(12)
    volumes = [
        small,
        flipped(small, (0, 2)),
        Volume(np.asarray(small.array), small.affine @ np.diag([1.7, 0.8, 0.6, 1.0])),
        rotated(small, 17.0),
    ]
    checked = 0
    for v in volumes:
        n = np.asarray(v.shape) - 1
        seeds = boundary_seeds(v)[::2] + [SeedPoint(*v.index_to_lps(p)) for p in rng.uniform(-5, n + 5, (4, 3))]
        for seed in seeds:
            try:
                full = extract_patch(v, seed)
            except SeedError:
                continue
            k = read_window(v, seed)[2]
            far = slab_of(v, 0, 1) if k.start > 1 else slab_of(v, v.shape[2] - 1, v.shape[2])
            part = extract_patch(placeholder(v), seed, slabs=[far, slab_of(v, k.start, k.stop)])
            np.testing.assert_array_equal(part.array, full.array)
            np.testing.assert_array_equal(part.affine, full.affine)
            assert part.valid == full.valid
            checked += 1
            if k.stop - k.start > 1:
                with pytest.raises(SeedError, match="were decoded"):
                    extract_patch(placeholder(v), seed, slabs=[slab_of(v, k.start, k.stop - 1)])
    assert checked >= 20
    # the whole CT: the nodule's patch from its slab alone
    seed = SeedPoint(-21.858572, -120.535814, -611.496416)
    k = read_window(lung1, seed)[2]
    part = extract_patch(placeholder(lung1), seed, slabs=[slab_of(lung1, k.start, k.stop)])
    np.testing.assert_array_equal(part.array, extract_patch(lung1, seed).array)


def test_slab_offset_refuses_what_is_not_a_run_of_slices(small: Volume) -> None:
    from mhub_fmcib.patch import slab_offset

    assert slab_offset(small, slab_of(small, 4, 9)) == 4
    shifted = slab_of(small, 4, 9)
    aff = shifted.affine.copy()
    aff[:3, 3] += shifted.affine[:3, 2] * 0.5  # half a slice
    with pytest.raises(ValueError, match="not a run of whole slices"):
        slab_offset(small, Volume(np.asarray(shifted.array), aff))
    with pytest.raises(ValueError, match="not a run of whole slices"):
        slab_offset(small, Volume(np.asarray(shifted.array)[:-1], shifted.affine))  # not whole slices
