"""Synthetic cohort, lesion table, patch cache (same patch code as inference), augmentations."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from mhub_fmcib_train.config import AugmentConfig, PretrainConfig, load_config
from mhub_fmcib_train.data.cache import BACKGROUND_MIN_DISTANCE_MM
from mhub_fmcib_train.transforms import FinetuneAugment, SimCLRView, centre_crop, histogram_shift

from mhub_fmcib.errors import ConfigError
from mhub_fmcib.image_io import read_image
from mhub_fmcib.patch import extract_patch, normalise_hu
from mhub_fmcib.records import SeedPoint

from .conftest import TinyCohort


def test_synthetic_seeds_are_mask_centroids_and_labels_differ(tiny: TinyCohort) -> None:
    with open(tiny.cohort.seeds_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(tiny.cohort.lesions) >= 16
    assert {r["split"] for r in rows} == {"train", "tune", "test"}
    r = rows[0]
    mask = sitk.ReadImage(r["mask_path"])
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    centroid = stats.GetCentroid(int(r["mask_label"]))  # SimpleITK: physical LPS mm
    assert np.allclose(centroid, [float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])], atol=1e-3)
    img = read_image(Path(r["image_path"]))
    hu = {c: [] for c in ("solid", "ground_glass")}  # type: dict[str, list[float]]
    for row in rows:
        if row["label"] in hu:
            hu[row["label"]].append(float(row["mean_hu"]))
    assert np.mean(hu["ground_glass"]) < np.mean(hu["solid"]) - 300
    assert img.array.dtype == np.int16


def test_cache_cube_centre_equals_inference_patch(tiny: TinyCohort) -> None:
    rec = tiny.cache.table.records[0]
    vol = read_image(rec.image_path)
    ref = extract_patch(vol, rec.seed, size=50).array
    got = tiny.cache.centre_patch(np.asarray(tiny.cache.lesions[rec.index]))
    if ref.shape == got.shape and all(v == (0, 50) for v in extract_patch(vol, rec.seed).valid):
        np.testing.assert_array_equal(got, ref)
    big = extract_patch(vol, rec.seed, size=tiny.data.region_size).array
    np.testing.assert_array_equal(np.asarray(tiny.cache.lesions[rec.index]), big)


def test_background_cubes_do_not_overlap_lesions(tiny: TinyCohort) -> None:
    with open(tiny.cache.folder / "background.csv", newline="") as f:
        bgs = list(csv.DictReader(f))
    assert len(bgs) > 0
    for bg in bgs:
        c = np.array([float(bg[k]) for k in ("coordX", "coordY", "coordZ")])
        seeds = [r.seed.as_array() for r in tiny.cache.table.records if str(r.image_path) == bg["image_path"]]
        assert min(np.max(np.abs(s - c)) for s in seeds) >= BACKGROUND_MIN_DISTANCE_MM


def test_fraction_subsets_train_and_tune_not_test(tiny: TinyCohort) -> None:
    t = tiny.cache.table
    for split in ("train", "tune"):
        full, half = t.select(split), t.select(split, 0.5, seed=1)
        assert len(half) == max(2, int(np.ceil(0.5 * len(full))))
        assert {r.index for r in half} <= {r.index for r in full}
        assert t.select(split, 0.5, seed=1) == half  # seeded
    assert t.select("test", 0.1) == t.select("test")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('output_dir = "o"\nbatch_size = 8\nbogus = 1\n[data]\nseeds_csv = "s.csv"\ncache_dir = "c"\n')
    with pytest.raises(ConfigError, match="bogus"):
        load_config(p, PretrainConfig)
    p.write_text('output_dir = "o"\n[data]\nseeds_csv = "s.csv"\ncache_dir = "c"\nfraction = 0.3\n')
    with pytest.raises(ConfigError, match="fraction"):
        load_config(p, PretrainConfig)
    p.write_text('output_dir = "o"\n[data]\nseeds_csv = "s.csv"\ncache_dir = "c"\n[encoder]\nlayers = [1, 1]\n')
    with pytest.raises(ConfigError, match="layers"):
        load_config(p, PretrainConfig)


def test_views_are_deterministic_and_shaped() -> None:
    cube = np.random.default_rng(0).random((64, 64, 64), dtype=np.float32)
    v = SimCLRView(AugmentConfig())
    a, b = v(cube, np.random.default_rng(5)), v(cube, np.random.default_rng(5))
    assert a.shape == (50, 50, 50) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, v(cube, np.random.default_rng(6)))


def test_histogram_shift_commutes_with_normalisation() -> None:
    hu = np.random.default_rng(1).normal(-300, 400, (20, 20, 20)).astype(np.float32)
    x = histogram_shift(normalise_hu(hu), np.random.default_rng(2))
    y = normalise_hu(histogram_shift(hu, np.random.default_rng(2)))
    np.testing.assert_allclose(x, y, atol=1e-5)


def test_finetune_augment_translation_pads_with_minus_1024_hu() -> None:
    cube = np.ones((64, 64, 64), np.float32)
    np.testing.assert_array_equal(centre_crop(cube, 50, (0, 0, 0)), np.ones((50,) * 3))
    shifted = centre_crop(cube, 50, (10, 0, 0))  # start 17: rows 47..49 fall outside
    assert shifted[:47].min() == 1.0 and shifted[47:].max() == 0.0
    out = FinetuneAugment(10)(cube, np.random.default_rng(0))
    assert out.shape == (50, 50, 50)


def test_seed_outside_is_rejected(tiny: TinyCohort) -> None:
    rec = tiny.cache.table.records[0]
    vol = read_image(rec.image_path)
    with pytest.raises(Exception, match="outside"):
        extract_patch(vol, SeedPoint(1e4, 1e4, 1e4), size=64)


def test_scan_random_background_is_a_fresh_random_50_cube_of_the_lesions_own_scan(tiny: TinyCohort) -> None:
    from mhub_fmcib_train.data.cache import random_scan_patch
    from mhub_fmcib_train.data.datasets import PretrainDataset

    from mhub_fmcib.patch import reference_grid

    cache = tiny.cache
    assert len(cache.scans) == len({str(r.image_path) for r in cache.table.records})
    for rec in cache.table.records[:3]:
        scan = cache.scans[cache.lesion_scan[rec.index]]
        assert scan.image_path == str(rec.image_path)
        np.testing.assert_array_equal(np.asarray(scan.volume.array), read_image(rec.image_path).array)
    scan = cache.scans[0]
    grid = reference_grid(scan.volume)
    # the same draws by hand: start uniform in [0, dim - 50] per axis of the 1 mm grid,
    # the patch is extract_patch's crop [start, start + 50)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    starts = []
    for _ in range(20):
        got = random_scan_patch(scan, rng_a)
        start = [int(rng_b.integers(0, d - 50 + 1)) for d in grid.shape]
        starts.append(start)
        c = grid.affine_lps @ np.array([s + 25.25 for s in start] + [1.0])
        want = extract_patch(scan.volume, SeedPoint(*map(float, c[:3])), size=50).array
        np.testing.assert_array_equal(got, want)
        assert got.shape == (50, 50, 50)
    assert len({tuple(s) for s in starts}) == 20  # fresh positions
    ds = PretrainDataset(cache, [0, 1], [], SimCLRView(), 0, seed=0, negatives="scan_random")
    item = ds[(0, 0)]
    assert item["views"].shape == (2, 1, 50, 50, 50) and item["background"].shape == (2, 1, 50, 50, 50)
    assert not np.array_equal(item["background"][0].numpy(), item["background"][1].numpy())  # two views
    assert not np.array_equal(ds[(1, 0)]["background"].numpy(), item["background"].numpy())  # redrawn per epoch


def test_shape_cohort_label_is_carried_by_shape_only(tmp_path: Path) -> None:
    from mhub_fmcib_train.config import SyntheticConfig
    from mhub_fmcib_train.synthetic import generate_cohort

    cohort = generate_cohort(SyntheticConfig(output_dir=tmp_path, n_scans=24, shape=(72, 72, 32),
                                             spacing=(1.0, 1.0, 2.0), classes="shape", seed=4))  # fmt: skip
    with open(cohort.seeds_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["label"] for r in rows} == {"round", "lobulated"}
    assert all(int(r["malignant"]) == (r["label"] == "lobulated") for r in rows)
    vols: dict[str, list[float]] = {"round": [], "lobulated": []}
    hu: dict[str, list[float]] = {"round": [], "lobulated": []}
    for r in rows:
        mask = sitk.GetArrayFromImage(sitk.ReadImage(r["mask_path"])) == int(r["mask_label"])
        vols[r["label"]].append(mask.sum() * 2.0 / (4 / 3 * np.pi * float(r["radius_mm"]) ** 3))
        hu[r["label"]].append(float(r["mean_hu"]))
    # volume matched to the sphere of the drawn radius in both classes (within voxelisation)
    for cls in vols:
        assert np.median(vols[cls]) == pytest.approx(1.0, abs=0.15), cls
    assert abs(np.mean(hu["round"]) - np.mean(hu["lobulated"])) < 25  # same N(20, 30) HU


def _texture_stats(rows: list[dict[str, str]]) -> dict[str, list[list[float]]]:
    """Per lesion, inside its mask: mean HU, voxel SD (HU) and gradient energy (mean
    squared difference of neighbouring voxels both in the mask, HU²)."""
    out: dict[str, list[list[float]]] = {"fine": [], "coarse": []}
    for r in rows:
        img = sitk.GetArrayFromImage(sitk.ReadImage(r["image_path"])).astype(np.float64)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(r["mask_path"])) == int(r["mask_label"])
        g = []
        for ax in range(3):
            both = np.logical_and(
                np.take(mask, range(1, mask.shape[ax]), ax), np.take(mask, range(mask.shape[ax] - 1), ax)
            )
            g.append(np.diff(img, axis=ax)[both] ** 2)
        out[r["label"]].append([img[mask].mean(), img[mask].std(), float(np.concatenate(g).mean())])
    return out


def test_texture_cohort_label_is_carried_by_grain_only(tmp_path: Path) -> None:
    from mhub_fmcib_train.config import SyntheticConfig
    from mhub_fmcib_train.evaluation.metrics import auc_roc
    from mhub_fmcib_train.synthetic import generate_cohort

    cohort = generate_cohort(SyntheticConfig(output_dir=tmp_path, n_scans=10, shape=(96, 96, 60),
                                             spacing=(1.0, 1.0, 1.0), lesions_per_scan=(2, 4), classes="texture",
                                             seed=5))  # fmt: skip
    with open(cohort.seeds_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 15 and {r["label"] for r in rows} == {"fine", "coarse"}
    assert all(int(r["malignant"]) == (r["label"] == "coarse") for r in rows)
    # every labelled lesion's 50 mm patch lies inside the scan (|seed| <= half extent - 25 mm, ±1 voxel)
    assert all(abs(float(r["coordZ"])) <= 30 - 25 + 1 and abs(float(r["coordX"])) <= 48 - 25 + 1 for r in rows)
    s = {k: np.array(v) for k, v in _texture_stats(rows).items()}
    # density matched: mean HU and voxel SD (60 HU texture + 25 HU noise ≈ 65 HU) alike in both classes
    assert abs(s["fine"][:, 0].mean() - s["coarse"][:, 0].mean()) < 40  # N(20, 30) each: SE of the difference ≈ 13
    assert s["fine"][:, 1].mean() == pytest.approx(65, abs=8) and s["coarse"][:, 1].mean() == pytest.approx(65, abs=8)
    y = np.r_[np.zeros(len(s["fine"])), np.ones(len(s["coarse"]))]
    x = np.r_[s["fine"], s["coarse"]]
    assert auc_roc(y, -x[:, 2]) > 0.95  # oracle: coarse grain has lower gradient energy
    assert 0.2 < auc_roc(y, x[:, 0]) < 0.8  # mean density alone near chance


def test_texture_cohort_lesion_radius_range_is_honoured(tmp_path: Path) -> None:
    from mhub_fmcib_train.config import SyntheticConfig
    from mhub_fmcib_train.synthetic import generate_cohort

    cohort = generate_cohort(SyntheticConfig(output_dir=tmp_path, n_scans=4, shape=(96, 96, 60),
                                             spacing=(1.0, 1.0, 1.0), classes="texture", seed=2,
                                             lesion_radius_mm=(15.0, 20.0)))  # fmt: skip
    with open(cohort.seeds_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(15.0 <= float(r["radius_mm"]) <= 20.0 for r in rows)
    for r in rows[:2]:  # the mask's volume is that of a sphere of the drawn radius (1 mm voxels)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(r["mask_path"])) == int(r["mask_label"])
        assert mask.sum() / (4 / 3 * np.pi * float(r["radius_mm"]) ** 3) == pytest.approx(1.0, abs=0.15)


def test_texture_cohort_grain_sd_and_distractors_are_honoured(tmp_path: Path) -> None:
    """The experiment's knobs: texture SD (HU), the two grain σ (voxels), distractors per scan."""
    from mhub_fmcib_train.config import SyntheticConfig
    from mhub_fmcib_train.synthetic import generate_cohort

    cfg = dict(n_scans=6, shape=(96, 96, 60), spacing=(1.0, 1.0, 1.0), lesions_per_scan=(2, 3),
               classes="texture", seed=5, lesion_radius_mm=(8.0, 10.0), noise_hu=10.0)  # fmt: skip
    strong = generate_cohort(
        SyntheticConfig(
            output_dir=tmp_path / "a", texture_sd_hu=300.0, texture_sigma_voxels=(0.5, 3.0), distractors=0, **cfg
        )
    )  # type: ignore[arg-type]
    with open(strong.seeds_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    s = {k: np.array(v) for k, v in _texture_stats(rows).items()}
    assert len(s["fine"]) and len(s["coarse"])
    # voxel SD ≈ √(300² + 10²) in both classes; gradient energy: σ 3 is far smoother than σ 0.5
    for k in ("fine", "coarse"):
        assert s[k][:, 1].mean() == pytest.approx(300, rel=0.25)
    assert s["fine"][:, 2].min() > 5 * s["coarse"][:, 2].max()
    # distractors: textured tissue outside every lesion mask. Count neighbouring voxel pairs
    # outside the masks, both soft tissue (-600..600 HU), differing by > 200 HU: body tissue
    # has only the 10 HU noise (a 14 SD step), a fine-grained distractor of SD 300 HU has many
    two = generate_cohort(
        SyntheticConfig(
            output_dir=tmp_path / "b", texture_sd_hu=300.0, texture_sigma_voxels=(0.5, 3.0), distractors=2, **cfg
        )
    )  # type: ignore[arg-type]

    def rough_pairs_outside_masks(seeds_csv: Path) -> int:
        with open(seeds_csv, newline="") as f:
            paths = {(r["image_path"], r["mask_path"]) for r in csv.DictReader(f)}
        n = 0
        for image, mask in paths:
            img = sitk.GetArrayFromImage(sitk.ReadImage(image)).astype(np.float64)
            soft = (np.abs(img) < 600) & (sitk.GetArrayFromImage(sitk.ReadImage(mask)) == 0)
            for ax in range(3):
                a, b = np.take(soft, range(1, soft.shape[ax]), ax), np.take(soft, range(soft.shape[ax] - 1), ax)
                n += int((np.abs(np.diff(img, axis=ax)) > 200)[a & b].sum())
        return n

    assert rough_pairs_outside_masks(strong.seeds_csv) < 10
    assert rough_pairs_outside_masks(two.seeds_csv) > 1000
