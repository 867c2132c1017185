"""The full-size FMCIB export path round-trips strictly through mhub_fmcib.model.weights.read_weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mhub_fmcib_train.config import EncoderConfig
from mhub_fmcib_train.models import ProjectionHead, ResNetEncoder, SimCLRModel, build_encoder, export_trunk, load_trunk

from mhub_fmcib.errors import WeightsError
from mhub_fmcib.model.network import FmcibResNet
from mhub_fmcib.model.weights import read_weights


def test_full_size_trunk_export_loads_strictly(tmp_path: Path) -> None:
    cfg = EncoderConfig()
    torch.manual_seed(0)
    trunk = build_encoder(cfg)
    assert isinstance(trunk, FmcibResNet)
    model = SimCLRModel(trunk, ProjectionHead(4096, 2048, 128))
    with torch.no_grad():
        model.trunk.bn1.running_mean.uniform_()
    path = export_trunk(model.trunk, cfg, tmp_path / "encoder.pt")
    w = read_weights(path)
    sd = model.trunk.state_dict()
    assert set(w.state_dict) == set(sd)
    for k, v in sd.items():
        assert torch.equal(w.state_dict[k], v), k
    assert len(w.sha256) == 64


def test_configurable_resnet_has_fmcib_keys_at_full_size() -> None:
    full = ResNetEncoder(EncoderConfig()).state_dict()
    ref = FmcibResNet().state_dict()
    assert {k: tuple(v.shape) for k, v in full.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_small_export_is_rejected_by_inference_but_loads_for_training(tmp_path: Path) -> None:
    small = EncoderConfig(widen_factor=0.125, layers=(1, 1, 1, 1))
    path = export_trunk(build_encoder(small), small, tmp_path / "small.pt")
    with pytest.raises(WeightsError, match="does not match"):
        read_weights(path)
    model, cfg = load_trunk(path)
    assert cfg == small and model(torch.zeros(1, 1, 50, 50, 50)).shape == (1, 256)
