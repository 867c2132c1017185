"""Start-up path of the encoder (issue 18) and the weights' dtype/finite checks (issue 15):
the network built with init skipped and the memory-mapped weights assigned gives exactly the
features of a conventionally built and loaded network; no second copy of the weights;
``read_weights`` remembers the sha256 (the cache itself: ``test_weights_file.py``);
features do not depend on the batch a lesion shares; wrong dtypes and non-finite values are
refused with the tensors named; non-finite features fail their lesion."""

from __future__ import annotations

import gc
import json
import logging
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mhub_fmcib.cli import build_parser, main
from mhub_fmcib.config import InputKind, Precision, RunConfig
from mhub_fmcib.errors import ConfigError, WeightsError
from mhub_fmcib.export.tables import read_features_csv, write_features_csv
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.network import FmcibResNet, build_uninitialised, uninitialised
from mhub_fmcib.model.weights import (
    LoadedWeights,
    check_finite,
    check_state_dict,
    conform_dtypes,
    read_weights,
)
from mhub_fmcib.model.weights_file import HASH_CACHE_FILE, sha256_file
from mhub_fmcib.pipeline import case_settings, measure, run
from mhub_fmcib.plan import plan_seeds_csv
from mhub_fmcib.records import Lesion, LesionStatus, SeedPoint, SeedSource, Volume

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data"


def _patches(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.2, 0.3, size=(n, 50, 50, 50)).astype(np.float32)


def test_skip_init_and_assign_equal_a_conventionally_loaded_network(
    eager_extractor: FeatureExtractor, loaded_weights: LoadedWeights
) -> None:
    conventional = FmcibResNet()  # default and Kaiming init, then a copying load
    conventional.load_state_dict({k: v.clone() for k, v in loaded_weights.state_dict.items()}, strict=True)
    conventional.eval()
    x = _patches(3)
    with torch.inference_mode():
        expected = conventional(torch.from_numpy(x[:, None])).numpy()
    np.testing.assert_array_equal(eager_extractor.extract(x), expected)


def test_weights_are_held_once_and_mapped(eager_extractor: FeatureExtractor, loaded_weights: LoadedWeights) -> None:
    """The eager network's parameters are the loaded (memory-mapped) tensors, not copies."""
    assert eager_extractor.encoder == "eager" and eager_extractor.model is not None
    params = dict(eager_extractor.model.state_dict())
    sd = loaded_weights.state_dict
    assert set(params) == set(sd)
    assert all(params[k].data_ptr() == sd[k].data_ptr() for k in sd)


def test_fused_encoder_releases_the_mapped_weights(weights_file: Path) -> None:
    """The fused extractor keeps only its packed copy: once the caller drops the loaded
    weights, the memory-mapped tensors (and so the mapped file) are freed."""
    loaded = read_weights(weights_file)
    probe = weakref.ref(loaded.state_dict["layer4.2.conv2.weight"])
    fused = FeatureExtractor(loaded, device="cpu", batch_size=2)
    assert fused.encoder == "fused" and fused.model is None and dict(fused.weights.state_dict) == {}
    assert (fused.weights.path, fused.weights.sha256) == (loaded.path, loaded.sha256)
    del loaded
    gc.collect()
    assert probe() is None
    assert fused.extract(_patches(1)).shape == (1, 4096)


def test_uninitialised_is_scoped() -> None:
    """Only networks built inside the context skip their init; afterwards init runs again."""
    skeleton = build_uninitialised()
    with uninitialised():
        FmcibResNet()
    normal = FmcibResNet()
    w = normal.layer1[0].conv2.weight.detach()
    fan_out = w.shape[0] * 27
    assert abs(float(w.std()) - (2 / fan_out) ** 0.5) < 0.1 * (2 / fan_out) ** 0.5  # Kaiming normal
    assert not skeleton.training


@pytest.mark.parametrize("name", ["extractor", "eager_extractor"])
def test_features_do_not_depend_on_batch_companions(name: str, request: pytest.FixtureRequest) -> None:
    """The same patch gives bit-identical features alone, with others, first or last, on
    the fused and the eager encoder."""
    extractor: FeatureExtractor = request.getfixturevalue(name)
    x = _patches(5)
    other = _patches(4, seed=9)
    alone = extractor.extract(x[:1])
    first = extractor.extract(x[:4])[:1]
    last = extractor.extract(np.concatenate([other[:3], x[:1]]))[-1:]
    in_five = extractor.extract(x)[:1]  # batch 4 then a lone patch
    lone_tail = extractor.extract(x)[4:]
    np.testing.assert_array_equal(alone, first)
    np.testing.assert_array_equal(alone, last)
    np.testing.assert_array_equal(alone, in_five)
    np.testing.assert_array_equal(lone_tail, extractor.extract(x[4:5]))


# --- sha256 cache ---------------------------------------------------------------------


def test_read_weights_uses_the_cache(weights_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = read_weights(weights_file, hash_cache_dir=cache)
    assert first.sha256 == sha256_file(weights_file)
    entries = json.loads((cache / HASH_CACHE_FILE).read_text())["entries"]
    assert entries[str(weights_file.resolve())]["sha256"] == first.sha256


# --- dtype and finite checks (issue 15, point 1) --------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32])
def test_other_dtypes_are_refused_with_the_tensor_named(dtype: torch.dtype, loaded_weights: LoadedWeights) -> None:
    sd = dict(loaded_weights.state_dict)
    sd["layer2.1.conv2.weight"] = sd["layer2.1.conv2.weight"].to(dtype)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(WeightsError, match=rf"wrong dtype: layer2\.1\.conv2\.weight: {name} \(expected float32\)"):
        check_state_dict(build_uninitialised(), sd, Path("w.torch"))


def test_float64_is_cast_with_a_log_line(
    extractor: FeatureExtractor, caplog: pytest.LogCaptureFixture, loaded_weights: LoadedWeights
) -> None:
    sd = {k: (v.double() if v.is_floating_point() else v) for k, v in loaded_weights.state_dict.items()}
    check_state_dict(build_uninitialised(), sd, Path("w64.torch"))
    with caplog.at_level(logging.INFO, logger="mhub_fmcib.model.weights"):
        cast = conform_dtypes(sd, Path("w64.torch"))
    assert "float64 tensors cast to float32" in caplog.text
    assert all(v.dtype != torch.float64 for v in cast.values())
    ext = FeatureExtractor(LoadedWeights(Path("w64.torch"), "0" * 64, cast), device="cpu", batch_size=2)
    x = _patches(2)
    np.testing.assert_array_equal(ext.extract(x), extractor.extract(x))


def test_non_finite_weights_are_named(loaded_weights: LoadedWeights) -> None:
    sd = dict(loaded_weights.state_dict)
    bad = sd["layer3.0.bn1.running_var"].clone()
    bad[7] = float("nan")
    bad[8] = float("inf")
    sd["layer3.0.bn1.running_var"] = bad
    with pytest.raises(WeightsError, match=r"layer3\.0\.bn1\.running_var \(1 NaN, 1 inf of 512\)"):
        check_finite(sd, Path("w.torch"))
    check_finite(loaded_weights.state_dict, Path("w.torch"))  # the good ones pass


def test_finite_check_by_sum_is_exact() -> None:
    """The check sums each tensor first: a sum that overflows float32 although every value
    is finite passes (checked element by element), a single inf or NaN among millions fails."""
    big = torch.full((1000,), 3e38)  # finite, but its float32 sum is inf
    assert not bool(torch.isfinite(big.sum()))
    check_finite({"big": big, "ints": torch.arange(5)}, Path("w.torch"))
    for bad_value, expected in ((float("inf"), "0 NaN, 1 inf"), (float("nan"), "1 NaN, 0 inf")):
        many = torch.zeros(2_000_000)
        many[1_234_567] = bad_value
        with pytest.raises(WeightsError, match=rf"many \({expected} of 2000000\)"):
            check_finite({"many": many, "big": big}, Path("w.torch"))


def test_nan_weights_file_exits_5_with_a_clear_message(
    weights_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sd = {k: v.clone() for k, v in torch.load(weights_file, mmap=True, weights_only=True)["trunk_state_dict"].items()}
    sd["conv1.weight"][0, 0, 0, 0, 0] = float("nan")
    nan_file = tmp_path / "nan.torch"
    torch.save({"trunk_state_dict": sd}, nan_file)
    del sd
    out = tmp_path / "out"
    args = ["run", str(SAMPLE / "seeds.csv"), str(out), "--seeds", "--weights", str(nan_file), "--device", "cpu"]
    assert main([*args, "--no-sr", "--no-seg", "--no-qc"], env={}) == 5
    err = caplog.text
    assert "non-finite values" in err and "conv1.weight (1 NaN, 0 inf" in err
    assert "Traceback" not in err
    assert not (out / "features.csv").exists()


def test_non_finite_features_fail_the_lesion_with_a_reason(loaded_weights: LoadedWeights) -> None:
    """Finite weights that overflow float32 (a huge batch-norm scale) give inf/NaN features:
    the lesion fails with a reason instead of being reported as measured."""
    sd = dict(loaded_weights.state_dict)
    sd["layer4.2.bn3.weight"] = torch.full_like(sd["layer4.2.bn3.weight"], 3e38)
    check_finite(sd, Path("huge.torch"))
    huge = FeatureExtractor(LoadedWeights(Path("huge.torch"), "0" * 64, sd), device="cpu", batch_size=2)
    arr = np.full((80, 80, 60), 40.0, dtype=np.float32)
    arr[30:50, 30:50, 20:40] = 300.0
    lesion = Lesion(lesion_id="l1", seed=SeedPoint(40.0, 40.0, 30.0), seed_source=SeedSource.USER)
    (result,) = measure([lesion], Volume(arr, np.eye(4)), huge)
    assert result.status is LesionStatus.FAILED
    assert "non-finite features" in (result.error or "") and result.features is None


# --- precision ------------------------------------------------------------------------


def test_fp16_on_cpu_is_a_usage_error(tmp_path: Path, loaded_weights: LoadedWeights) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        FeatureExtractor(loaded_weights, device="cpu", precision=Precision.FP16)
    args = ["run", str(SAMPLE / "seeds.csv"), str(tmp_path / "out"), "--seeds", "--device", "cpu"]
    args += ["--precision", "fp16"]
    assert main(args, env={}) == 2


def test_precision_is_parsed_and_round_trips() -> None:
    args = build_parser().parse_args(["run", str(SAMPLE / "seeds.csv"), "out", "--seeds", "--precision", "bf16"])
    cfg = RunConfig.from_args(args)
    assert cfg.precision is Precision.BF16
    assert cfg.to_dict()["precision"] == "bf16"
    assert RunConfig.from_dict(cfg.to_dict()).precision is Precision.BF16
    with pytest.raises(ConfigError, match="fp32, bf16 or fp16"):
        RunConfig.from_dict({**cfg.to_dict(), "precision": "int8"})


def test_precision_is_recorded_in_features_csv_and_run_json(extractor: FeatureExtractor, tmp_path: Path) -> None:
    """Every features.csv row and run.json's inputs say which arithmetic gave the features
    (and a different precision is a different setting: a resumed run does not reuse it)."""

    cfg = RunConfig(
        input=SAMPLE / "seeds.csv",
        output=tmp_path / "out",
        input_kind=InputKind.SEEDS_CSV,
        export_sr=False,
        export_seg=False,
        export_qc=False,
    )
    report = run(cfg, {}, extractor=extractor)
    meta, _ = read_features_csv(cfg.output / "features.csv")
    assert meta and {m["precision"] for m in meta} == {"fp32"}
    assert json.loads((cfg.output / "run.json").read_text())["inputs"]["precision"] == "fp32"
    # the bf16 path writes its name the same way (its forward pass is too slow to run on a
    # CPU without AVX-512 BF16, see benchmarks/README.md, so the writer is called directly)
    n = write_features_csv(tmp_path / "bf16.csv", report.results, "ab" * 32, "x", Precision.BF16)
    meta16, _ = read_features_csv(tmp_path / "bf16.csv")
    assert n == len(meta16) and {m["precision"] for m in meta16} == {"bf16"}
    case = plan_seeds_csv(cfg.input).cases[0]
    assert case_settings(case, cfg) != case_settings(case, replace(cfg, precision=Precision.BF16))
