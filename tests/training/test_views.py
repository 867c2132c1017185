"""SimCLR view augmentations: the authors' RandScaleCrop edges, one-axis flips, air clamp."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mhub_fmcib_train.config import AugmentConfig
from mhub_fmcib_train.transforms import SimCLRView, rand_scale_box, rand_scale_crop, random_flip, random_resized_crop


def test_rand_scale_crop_edges_are_isotropic_and_uniform_25_to_50() -> None:
    rng = np.random.default_rng(0)
    boxes = [rand_scale_box((50, 50, 50), rng, (0.5, 1.0)) for _ in range(20000)]
    assert all(len(set(e)) == 1 for _, e in boxes)  # one scale for every axis
    assert all(0 <= s_ <= 50 - e_ for st, e in boxes for s_, e_ in zip(st, e, strict=True))
    edges = np.array([e[0] for _, e in boxes])
    assert edges.min() == 26 and edges.max() == 50
    # edge = ceil(50 s), s ~ U(0.5, 1): P(edge = e) = 1/25 for e in 26..50, and 0 for 25
    # (s = 0.5 exactly has probability 0)
    counts = np.bincount(edges, minlength=51)[25:51] / edges.size
    assert counts[0] == pytest.approx(0.0, abs=1e-3)
    assert np.abs(counts[1:] - 1 / 25).max() < 0.006
    assert edges.mean() == pytest.approx(np.mean(np.arange(26, 51)), abs=0.3)


def test_rand_scale_crop_takes_a_box_inside_the_patch_and_resizes_it() -> None:
    rng = np.random.default_rng(1)
    patch = np.arange(50**3, dtype=np.float32).reshape(50, 50, 50)
    view, edge = rand_scale_crop(patch, rng, (1.0, 1.0))
    assert edge == 50
    np.testing.assert_allclose(view, patch, rtol=1e-6)  # scale 1: the whole patch, resize is identity
    const = np.full((50, 50, 50), 0.3, np.float32)
    v, _ = rand_scale_crop(const, rng, (0.5, 0.5))
    np.testing.assert_allclose(v, 0.3, rtol=1e-6)


def test_old_volume_fraction_crop_gives_edges_about_40_to_50() -> None:
    rng = np.random.default_rng(2)
    cube = np.zeros((64, 64, 64), np.float32)
    # volume fraction s in [0.5, 1] -> mean edge 50 · s^(1/3) in [39.7, 50]
    assert 50 * 0.5 ** (1 / 3) == pytest.approx(39.69, abs=0.01)
    out = random_resized_crop(cube, rng, (0.5, 1.0), (1.0, 1.0))
    assert out.shape == (50, 50, 50)


def test_one_axis_flip_flips_at_most_one_axis_with_probability_p() -> None:
    x = np.random.default_rng(3).random((4, 4, 4)).astype(np.float32)
    rng = np.random.default_rng(4)
    flipped = 0
    for _ in range(2000):
        y = random_flip(x, rng, 0.5, "one_axis")
        n_axes = sum(not np.array_equal(y, x) and np.array_equal(y, np.flip(x, a)) for a in range(3))
        assert n_axes in (0, 1)
        assert n_axes == 1 or np.array_equal(y, x)
        flipped += n_axes
    assert flipped / 2000 == pytest.approx(0.5, abs=0.04)


def test_view_clamps_below_minus_1024_hu() -> None:
    cube = np.full((64, 64, 64), -0.2, np.float32)  # -1638 HU
    cube[20:40, 20:40, 20:40] = 0.35
    view = SimCLRView(AugmentConfig())(cube, np.random.default_rng(5))
    assert view.min() >= 0.0  # 0 = -1024 HU
    off = SimCLRView(AugmentConfig(clamp_air=False))(cube, np.random.default_rng(5))
    assert off.min() < 0.0
    assert math.isclose(float(view.max()), float(off.max()), rel_tol=1e-6)
