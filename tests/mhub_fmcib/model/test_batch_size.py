"""``--batch-size auto`` (issue 18, point 6): on CUDA the batch is chosen from the free device
memory and the activation memory per patch (a pure function, tested with given numbers); on
a CPU it is 8, today's default; the flag parses ``auto`` and whole numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhub_fmcib.cli import build_parser, main
from mhub_fmcib.config import RunConfig, parse_batch_size
from mhub_fmcib.errors import ConfigError
from mhub_fmcib.model.extractor import (
    DEFAULT_CPU_BATCH,
    MAX_AUTO_BATCH,
    MIN_COMPUTE_BATCH,
    FeatureExtractor,
    choose_batch_size,
)

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


def test_auto_on_cpu_is_todays_default(extractor: FeatureExtractor) -> None:
    auto = FeatureExtractor(extractor.weights, device="cpu", batch_size=None)
    assert auto.batch_size == DEFAULT_CPU_BATCH == 8 and auto.bytes_per_patch is None


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
