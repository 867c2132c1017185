"""``--batch-size auto`` (issue 18, points 2 and 6): the batch is chosen from free memory and
the memory per patch (a pure function, tested with given numbers): on CUDA from the device's
free memory and a measured probe, on a CPU from the available RAM, at most 16 (fewer CPU
seconds per patch than 8, the same features); the flag parses ``auto`` and whole numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mhub_fmcib.cli import build_parser, main
from mhub_fmcib.config import RunConfig, parse_batch_size
from mhub_fmcib.errors import ConfigError
from mhub_fmcib.model.extractor import (
    CPU_BYTES_PER_PATCH,
    MAX_AUTO_BATCH,
    MAX_AUTO_CPU_BATCH,
    MIN_COMPUTE_BATCH,
    FeatureExtractor,
    available_host_memory,
    choose_batch_size,
)
from mhub_fmcib.model.weights import LoadedWeights

GiB, MiB = 2**30, 2**20
SAMPLE = Path(__file__).resolve().parents[3] / "sample_data"


@pytest.mark.parametrize(
    ("free", "per_patch", "expected"),
    [
        (40 * GiB, 30 * MiB, 128),  # an H100/A100 with room for more: capped
        (10 * GiB, 30 * MiB, 128),  # 8 GiB usable / 30 MiB = 273: capped
        (4 * GiB, 30 * MiB, 104),  # 3.2 GiB usable / 30 MiB = 109 -> a multiple of 8
        (1 * GiB, 30 * MiB, 16),  # 512 MiB kept (more than 20 %): 17 -> 16
        (700 * MiB, 30 * MiB, 6),  # fewer than 8 fit: the count itself
        (600 * MiB, 64 * MiB, MIN_COMPUTE_BATCH),  # nothing fits: the smallest compute batch
    ],
)
def test_batch_is_the_largest_that_fits(free: int, per_patch: int, expected: int) -> None:
    assert choose_batch_size(free, per_patch) == expected


def test_batch_chooser_keeps_the_reserve_and_bounds() -> None:
    free, per = 24 * GiB, 100 * MiB
    n = choose_batch_size(free, per, max_batch=1000)
    assert n == 192 and n * per <= free * 0.8 < (n + 8) * per  # the largest multiple of 8 within 80 %
    assert choose_batch_size(free, per) == MAX_AUTO_BATCH
    assert choose_batch_size(free, per, reserve_fraction=0.5) == 120
    assert choose_batch_size(free, per, max_batch=20) == 16
    with pytest.raises(ValueError, match="positive"):
        choose_batch_size(free, 0)


def test_auto_on_cpu_is_chosen_by_available_memory(extractor: FeatureExtractor, loaded_weights: LoadedWeights) -> None:
    auto = FeatureExtractor(loaded_weights, device="cpu", batch_size=None)
    free = available_host_memory()
    assert 0 < free < 2**50
    expected = choose_batch_size(free, CPU_BYTES_PER_PATCH, max_batch=MAX_AUTO_CPU_BATCH)
    assert auto.batch_size == expected and auto.bytes_per_patch is None
    assert choose_batch_size(16 * GiB, CPU_BYTES_PER_PATCH, max_batch=MAX_AUTO_CPU_BATCH) == 16
    assert choose_batch_size(768 * MiB, CPU_BYTES_PER_PATCH, max_batch=MAX_AUTO_CPU_BATCH) == 8  # a small cgroup
    x = np.random.default_rng(1).normal(0.2, 0.3, size=(3, 50, 50, 50)).astype(np.float32)
    np.testing.assert_array_equal(auto.extract(x), extractor.extract(x))  # batch 4 and auto: same features


def test_batch_size_flag(tmp_path: Path) -> None:
    def cfg(*flags: str) -> RunConfig:
        args = build_parser().parse_args(["run", str(SAMPLE / "seeds.csv"), str(tmp_path), "--seeds", *flags])
        return RunConfig.from_args(args)

    assert cfg().batch_size is None and cfg("--batch-size", "AUTO").batch_size is None
    assert cfg("--batch-size", "12").batch_size == 12
    assert RunConfig.from_dict(cfg().to_dict()).batch_size is None
    assert parse_batch_size(" auto ") is None
    with pytest.raises(ConfigError, match="whole number or auto"):
        parse_batch_size("big")
    assert main(["run", str(SAMPLE / "seeds.csv"), str(tmp_path / "o"), "--seeds", "--batch-size", "x"], env={}) == 2
