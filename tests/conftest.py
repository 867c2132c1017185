"""Shared fixtures: the committed sample study, a random-initialised weights file in the
published format (never the real weights, never the network), and loaded encoders."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhub_fmcib.config import CpuEncoder
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.weights import LoadedWeights, read_weights, write_random_weights

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
def loaded_weights(weights_file: Path) -> LoadedWeights:
    """The random weights read and checked (memory-mapped tensors)."""
    return read_weights(weights_file)


@pytest.fixture(scope="session")
def extractor(loaded_weights: LoadedWeights) -> FeatureExtractor:
    """The default CPU extractor: the fused encoder (it keeps only its packed weights)."""
    return FeatureExtractor(loaded_weights, device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def eager_extractor(loaded_weights: LoadedWeights) -> FeatureExtractor:
    """The eager network with the mapped weights assigned (``--cpu-encoder eager``)."""
    return FeatureExtractor(loaded_weights, device="cpu", batch_size=4, cpu_encoder=CpuEncoder.EAGER)
