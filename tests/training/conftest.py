"""A tiny synthetic cohort and its patch cache, shared by the training tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mhub_fmcib_train.config import DataConfig, SyntheticConfig
from mhub_fmcib_train.data.cache import PatchCache, build_cache
from mhub_fmcib_train.synthetic import SyntheticCohort, generate_cohort


@dataclass(frozen=True)
class TinyCohort:
    cohort: SyntheticCohort
    data: DataConfig
    cache: PatchCache
    root: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCohort:
    root = tmp_path_factory.mktemp("cohort")
    cohort = generate_cohort(SyntheticConfig(output_dir=root / "synthetic", n_scans=16, seed=3))
    data = DataConfig(seeds_csv=cohort.seeds_csv, cache_dir=root / "cache", background_per_scan=3)
    return TinyCohort(cohort, data, build_cache(data), root)
