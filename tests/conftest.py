"""Shared fixtures: the committed sample study, a random-initialised weights file in the
published format (never the real weights, never the network), and a loaded encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.weights import read_weights, write_random_weights

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised encoder saved as ``{"trunk_state_dict": ...}`` (738 MB)."""
    return write_random_weights(tmp_path_factory.mktemp("weights") / "model_weights.torch", seed=0)


@pytest.fixture(scope="session")
def extractor(weights_file: Path) -> FeatureExtractor:
    return FeatureExtractor(read_weights(weights_file), device="cpu", batch_size=4)
