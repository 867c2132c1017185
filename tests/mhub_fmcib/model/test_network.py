"""The encoder equals MONAI's resnet50 with the reference arguments; weights load strictly."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet50

from mhub_fmcib.errors import WeightsError
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.network import N_PARAMETERS, N_STATE_TENSORS, FmcibResNet
from mhub_fmcib.model.weights import read_weights, sha256_file, write_random_weights


def monai_reference() -> torch.nn.Module:
    return resnet50(
        spatial_dims=3,
        n_input_channels=1,
        widen_factor=2,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        bias_downsample=True,
        feed_forward=False,
    )


def test_same_keys_shapes_and_counts_as_monai() -> None:
    ours, ref = FmcibResNet().state_dict(), monai_reference().state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape for k in ours)
    assert len(ours) == N_STATE_TENSORS == 322
    assert sum(p.numel() for p in FmcibResNet().parameters()) == N_PARAMETERS == 184_477_824


def test_same_output_as_monai_with_loaded_weights(extractor: FeatureExtractor) -> None:
    ref = monai_reference()
    ref.load_state_dict(dict(extractor.weights.state_dict), strict=True)
    ref.eval()
    x = np.random.default_rng(0).normal(0.2, 0.3, size=(2, 50, 50, 50)).astype(np.float32)
    with torch.inference_mode():
        expected = ref(torch.from_numpy(x[:, None])).numpy()
    got = extractor.extract(x)
    assert got.shape == (2, 4096)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # stride matters: MONAI's default stride 1 gives different features
    stride1 = resnet50(
        spatial_dims=3,
        n_input_channels=1,
        widen_factor=2,
        conv1_t_size=7,
        shortcut_type="B",
        bias_downsample=True,
        feed_forward=False,
    )
    stride1.load_state_dict(dict(extractor.weights.state_dict))
    stride1.eval()
    with torch.inference_mode():
        other = stride1(torch.from_numpy(x[:, None])).numpy()
    assert np.abs(other - expected).max() > 1e-3


def test_batching_does_not_change_features(extractor: FeatureExtractor) -> None:
    x = np.random.default_rng(1).normal(0.2, 0.3, size=(5, 50, 50, 50)).astype(np.float32)
    one = np.concatenate([extractor.extract(x[i : i + 1]) for i in range(5)])
    # conv algorithms differ with batch size: float32 rounding only
    np.testing.assert_allclose(extractor.extract(x), one, rtol=1e-4, atol=1e-4)


def test_lightning_layout_loads_and_sha_is_recorded(tmp_path: Path, weights_file: Path) -> None:
    p = write_random_weights(tmp_path / "ckpt.ckpt", seed=0, layout="lightning")
    lw = read_weights(p)
    ref = read_weights(weights_file)
    assert lw.sha256 == sha256_file(p) != ref.sha256
    for k in ("conv1.weight", "layer4.2.bn3.running_var"):
        assert torch.equal(lw.state_dict[k], ref.state_dict[k])


def test_wrong_file_names_the_tensors(tmp_path: Path) -> None:
    sd = FmcibResNet().state_dict()
    sd.pop("layer1.0.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(128, 1, 3, 3, 3)
    torch.save({"trunk_state_dict": sd}, tmp_path / "bad.torch")
    with pytest.raises(WeightsError) as e:
        read_weights(tmp_path / "bad.torch")
    msg = str(e.value)
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg and "conv1.weight: file (128, 1, 3, 3, 3)" in msg


def test_stride1_config_mismatch_is_not_detectable_but_other_nets_are(tmp_path: Path) -> None:
    torch.save({"trunk_state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.torch")
    with pytest.raises(WeightsError, match="322 missing"):
        read_weights(tmp_path / "other.torch")


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04garbage"])
def test_unreadable_files(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "w.torch"
    p.write_bytes(content)
    with pytest.raises(WeightsError, match=str(p)):
        read_weights(p)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.torch"
    torch.save({"trunk_state_dict": Fraction(1, 3)}, p)  # any non-tensor pickled object
    with pytest.raises(WeightsError, match="weights_only"):
        read_weights(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights(tmp_path / "nope.torch")


def test_traced_cpu_encoder_equals_eager(extractor: FeatureExtractor) -> None:
    """The traced, frozen CPU graph (batch norm folded) differs from eager mode by float32
    rounding only, for the traced batch size and others."""
    fast = FeatureExtractor(extractor.weights, device="cpu", batch_size=2, optimize=True)
    assert isinstance(fast.model, torch.jit.ScriptModule)
    assert fast.fixed_batch
    x = np.random.default_rng(2).normal(0.2, 0.3, size=(3, 50, 50, 50)).astype(np.float32)
    np.testing.assert_allclose(fast.extract(x), extractor.extract(x), rtol=1e-4, atol=1e-4)  # 2 + 1 (padded)
