"""Probe and fine-tune end to end on the tiny cohort; the head file vs scikit-learn."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mhub_fmcib_train.config import EncoderConfig, FinetuneConfig, ProbeConfig
from mhub_fmcib_train.finetune import run_finetune
from mhub_fmcib_train.models import build_encoder, export_trunk
from mhub_fmcib_train.probe import run_probe
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mhub_fmcib.model.heads import LinearHead

from .conftest import TinyCohort

SMALL = EncoderConfig(widen_factor=0.125, layers=(1, 1, 1, 1))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_head_equals_sklearn_predict_proba(tmp_path: Path, n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(60, 4096)).astype(np.float32) * rng.uniform(0.1, 5, 4096).astype(np.float32)
    y = rng.integers(0, n_classes, 60)
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(C=0.05, max_iter=500).fit(scaler.transform(x), y)
    head = LinearHead(
        name="h", task="binary" if n_classes == 2 else "classification",
        class_names=tuple(str(c) for c in range(n_classes)),
        feature_names=tuple(f"f{i}" for i in range(4096)),
        mean=scaler.mean_, scale=scaler.scale_, coef=lr.coef_, intercept=lr.intercept_,
    )  # fmt: skip
    path = tmp_path / "head.json"
    path.write_text(json.dumps(head.to_dict()))
    loaded = LinearHead.load(path)
    xt = rng.normal(size=(7, 4096)).astype(np.float32)
    expected = lr.predict_proba(scaler.transform(xt))
    got = loaded.predict(xt)
    np.testing.assert_allclose(got, expected[:, 1] if n_classes == 2 else expected, rtol=1e-5, atol=1e-7)


def test_probe_end_to_end_head_matches_sklearn(tiny: TinyCohort, tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = export_trunk(build_encoder(SMALL), SMALL, tmp_path / "enc.pt")
    cfg = ProbeConfig(data=tiny.data, output_dir=tmp_path / "probe", weights=weights, task="binary",
                      n_trials=4, device="cpu", head_name="malignancy")  # fmt: skip
    data = dataclasses.replace(tiny.data, label_column="malignant")
    cfg = dataclasses.replace(cfg, data=data)
    res = run_probe(cfg)
    head = LinearHead.load(res.head_path)
    assert head.name == "malignancy" and head.class_names == ("0", "1")
    assert 1e-6 <= res.best_c <= 1e3
    # re-extract the test features independently and apply the head file
    from mhub_fmcib_train.data.cache import build_cache
    from mhub_fmcib_train.features import extract_features
    from mhub_fmcib_train.models import load_trunk

    enc, _ = load_trunk(weights)
    cache = build_cache(cfg.data)
    rows = [r.index for r in cache.table.select("test")]
    feats = extract_features(enc, cache, rows, torch.device("cpu"))
    np.testing.assert_allclose(head.predict(feats), res.test_probabilities, rtol=1e-5, atol=1e-7)
    assert json.loads((tmp_path / "probe" / "probe_metrics.json").read_text())["metric"] == "auc"


def test_finetune_end_to_end_from_random_and_from_checkpoint(tiny: TinyCohort, tmp_path: Path) -> None:
    data = tiny.data.__class__(**{**tiny.data.__dict__, "label_column": "label", "fraction": 0.5})
    cfg = FinetuneConfig(data=data, output_dir=tmp_path / "ft1", init="random", encoder=SMALL,
                         task="classification", head_hidden=(16,), epochs=2, batch_size=4,
                         lr=0.01, step_size=1, device="cpu")  # fmt: skip
    res = run_finetune(cfg)
    assert res.best_epoch in (1, 2) and 0.0 <= res.test_metric <= 1.0
    ck = torch.load(res.checkpoint, weights_only=True)
    assert set(ck) >= {"trunk_state_dict", "head_state_dict", "class_names"}
    assert ck["class_names"] == ["ground_glass", "lobulated", "solid"]
    lines = (tmp_path / "ft1" / "log.csv").read_text().splitlines()
    assert lines[1].split(",")[1] == "0.01" and lines[2].split(",")[1] == "0.001"  # step decay
    data2 = tiny.data.__class__(**{**tiny.data.__dict__, "label_column": "malignant"})
    cfg2 = FinetuneConfig(data=data2, output_dir=tmp_path / "ft2", init="checkpoint", weights=res.checkpoint,
                          task="binary", head_hidden=(8,), epochs=1, batch_size=4, device="cpu")  # fmt: skip
    res2 = run_finetune(cfg2)
    assert res2.best_epoch == 1 and 0.0 <= res2.test_metric <= 1.0


def test_scoring_in_batches_equals_one_patch_at_a_time(tiny: TinyCohort) -> None:
    from mhub_fmcib_train.data.datasets import LabelledDataset
    from mhub_fmcib_train.finetune import FinetuneModel, _predict
    from mhub_fmcib_train.models import ClassifierHead
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    enc = EncoderConfig(widen_factor=0.0625, layers=(1, 1, 1, 1))
    model = FinetuneModel(build_encoder(enc), ClassifierHead(enc.n_features, (8,), 1))
    rows = list(range(19))
    ds = LabelledDataset(tiny.cache, rows, [0.0] * len(rows), None, 0, True)
    one = DataLoader(ds, batch_sampler=[[(0, i)] for i in rows])
    many = DataLoader(ds, batch_sampler=[[(0, i) for i in rows[k : k + 16]] for k in range(0, 19, 16)])
    a = _predict(model, one, torch.device("cpu"), True)
    b = _predict(model, many, torch.device("cpu"), True)
    assert a.shape == b.shape == (19,)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
