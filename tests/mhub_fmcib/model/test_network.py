"""The encoder equals MONAI's resnet50 with the reference arguments; weights load strictly."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet50

from mhub_fmcib.cli import build_parser, main
from mhub_fmcib.config import CpuEncoder, Precision, RunConfig
from mhub_fmcib.errors import WeightsError
from mhub_fmcib.model.extractor import FeatureExtractor, extractor_for
from mhub_fmcib.model.network import N_PARAMETERS, N_STATE_TENSORS, FmcibResNet
from mhub_fmcib.model.weights import LoadedWeights, read_weights, write_random_weights
from mhub_fmcib.model.weights_file import sha256_file

#: Issue 18's bound for an exact path: 1e-4 absolute on a feature scale of ~47 (the real
#: weights'), as a fraction of the largest feature.
EXACT_FRACTION_OF_SCALE = 1e-4 / 47


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


def test_same_output_as_monai_with_loaded_weights(
    extractor: FeatureExtractor, eager_extractor: FeatureExtractor, loaded_weights: LoadedWeights
) -> None:
    """The eager network is MONAI's to 1e-6; the fused encoder (the CPU default) is within
    the issue's bound of it (1e-4 on a feature scale of 47)."""
    ref = monai_reference()
    ref.load_state_dict(dict(loaded_weights.state_dict), strict=True)
    ref.eval()
    x = np.random.default_rng(0).normal(0.2, 0.3, size=(2, 50, 50, 50)).astype(np.float32)
    with torch.inference_mode():
        expected = ref(torch.from_numpy(x[:, None])).numpy()
    got = eager_extractor.extract(x)
    assert got.shape == (2, 4096)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    fused = extractor.extract(x)
    assert extractor.encoder == "fused"
    assert np.abs(fused - expected).max() <= EXACT_FRACTION_OF_SCALE * np.abs(expected).max()
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
    stride1.load_state_dict(dict(loaded_weights.state_dict))
    stride1.eval()
    with torch.inference_mode():
        other = stride1(torch.from_numpy(x[:, None])).numpy()
    assert np.abs(other - expected).max() > 1e-3


def test_batching_does_not_change_features(extractor: FeatureExtractor) -> None:
    x = np.random.default_rng(1).normal(0.2, 0.3, size=(5, 50, 50, 50)).astype(np.float32)
    one = np.concatenate([extractor.extract(x[i : i + 1]) for i in range(5)])
    # conv algorithms differ with batch size: float32 rounding only
    np.testing.assert_allclose(extractor.extract(x), one, rtol=1e-4, atol=1e-4)


def test_a_sequence_of_patches_is_stacked_chunk_by_chunk(extractor: FeatureExtractor) -> None:
    """The pipeline passes its patches as a list (never one stacked copy of all of them): the
    same features, bit for bit, as the stacked array, across chunk boundaries (5 patches,
    batch 4); a patch of the wrong shape is refused."""
    x = np.random.default_rng(2).normal(0.2, 0.3, size=(5, 50, 50, 50)).astype(np.float32)
    assert extractor.batch_size == 4
    np.testing.assert_array_equal(extractor.extract(list(x)), extractor.extract(x))
    assert extractor.extract([]).shape == (0, 4096)
    with pytest.raises(ValueError, match="must be"):
        extractor.extract([x[0], x[1, :49]])


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


def test_fused_encoder_is_as_exact_as_eager(
    extractor: FeatureExtractor, eager_extractor: FeatureExtractor, loaded_weights: LoadedWeights
) -> None:
    """The fused encoder (batch norm folded, packed oneDNN convolutions, stages 3-4 as sums
    of matrix products) computes the network: against a float64 evaluation of the same network
    it is within the bound, as eager float32 is, and within the bound of eager."""
    x = np.random.default_rng(2).normal(0.2, 0.3, size=(3, 50, 50, 50)).astype(np.float32)
    net = FmcibResNet()
    net.load_state_dict(dict(loaded_weights.state_dict), strict=True)
    net = net.double().eval()
    with torch.inference_mode():
        truth = net(torch.from_numpy(x[:, None]).double()).numpy()
    bound = EXACT_FRACTION_OF_SCALE * np.abs(truth).max()
    fused, eager = extractor.extract(x), eager_extractor.extract(x)  # batch 3 on a batch-4 packing
    assert np.abs(fused - truth).max() <= bound
    assert np.abs(eager - truth).max() <= bound
    assert np.abs(fused - eager).max() <= bound
    assert np.abs(fused - eager).max() > 0  # a different computation, not the eager one again


def test_cpu_encoder_setting_reaches_the_extractor(
    loaded_weights: LoadedWeights, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--cpu-encoder picks the path; the obsolete --optimize-cpu still parses, is ignored and
    says so; --channels-last applies to the eager network (the fused one is channels-last
    already); bf16 on a CPU uses the eager network (autocast)."""
    assert main(["run", str(tmp_path / "missing.csv"), str(tmp_path / "o"), "--seeds", "--optimize-cpu"], env={}) != 0
    assert "--optimize-cpu is obsolete and ignored" in caplog.text and "Traceback" not in caplog.text
    for flag, expected in (("fused", "fused"), ("eager", "eager")):
        args = build_parser().parse_args(["run", "in.csv", str(tmp_path), "--seeds", "--cpu-encoder", flag])
        assert extractor_for(RunConfig.from_args(args), loaded_weights).encoder == expected
    fused_cl = FeatureExtractor(loaded_weights, device="cpu", batch_size=2, channels_last=True)
    assert fused_cl.encoder == "fused" and not fused_cl.channels_last  # channels-last anyway
    eager_cl = FeatureExtractor(
        loaded_weights, device="cpu", batch_size=2, cpu_encoder=CpuEncoder.EAGER, channels_last=True
    )
    x = np.random.default_rng(5).normal(0.2, 0.3, size=(2, 50, 50, 50)).astype(np.float32)
    plain = FeatureExtractor(loaded_weights, device="cpu", batch_size=2, cpu_encoder=CpuEncoder.EAGER).extract(x)
    assert eager_cl.channels_last
    assert np.abs(eager_cl.extract(x) - plain).max() <= EXACT_FRACTION_OF_SCALE * np.abs(plain).max()
    obsolete = build_parser().parse_args(["run", "in.csv", str(tmp_path), "--seeds", "--optimize-cpu"])
    assert RunConfig.from_args(obsolete).cpu_encoder is CpuEncoder.FUSED
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        bf16 = FeatureExtractor(loaded_weights, device="cpu", batch_size=2, precision=Precision.BF16)
        assert bf16.encoder == "eager"
