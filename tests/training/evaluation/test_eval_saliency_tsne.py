"""Saliency wired to MONAI's GuidedBackpropSmoothGrad; t-SNE equals scikit-learn's."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mhub_fmcib_train.evaluation.saliency import (
    FineTunedClassifier,
    render_saliency,
    smooth_guided_backprop,
)
from mhub_fmcib_train.evaluation.tsne import plot_tsne, tsne_embedding
from monai.visualize import GuidedBackpropSmoothGrad
from monai.visualize.gradient_based import _GradReLU
from sklearn.manifold import TSNE

from mhub_fmcib.model.network import FmcibResNet


def _model() -> FineTunedClassifier:
    torch.manual_seed(0)
    trunk = FmcibResNet(widen_factor=0.125)
    return FineTunedClassifier(trunk, n_classes=2, n_features=256).eval()


def test_saliency_equals_monai(tmp_path: Path) -> None:
    model = _model()
    patch = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    ours = smooth_guided_backprop(model, patch, target_class=1, n_samples=3, seed=4)
    assert ours.shape == (20, 20, 20)
    assert ours.dtype == np.float32
    assert np.count_nonzero(ours) > 0.5 * ours.size
    # oracle: MONAI directly, on a copy whose stem ReLU ("act") is MONAI's guided ReLU
    ref_model = copy.deepcopy(model).eval()
    ref_model.trunk.act = _GradReLU()
    torch.manual_seed(4)
    ref = GuidedBackpropSmoothGrad(ref_model, n_samples=3, verbose=False)(torch.from_numpy(patch)[None, None], index=1)[
        0, 0
    ].numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    # the model's modules are restored afterwards
    assert isinstance(model.trunk.act, torch.nn.ReLU)
    png = render_saliency(patch, ours, tmp_path / "sal.png", "test")
    assert png.stat().st_size > 5_000


def test_saliency_full_trunk_small_input() -> None:
    torch.manual_seed(1)
    model = FineTunedClassifier(FmcibResNet(), n_classes=3).eval()
    patch = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
    out = smooth_guided_backprop(model, patch, n_samples=1, seed=0)
    assert out.shape == (16, 16, 16)
    assert np.all(out >= 0)
    assert out.max() > 0


def test_tsne_equals_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    feats = rng.normal(size=(60, 10)) + 3 * np.eye(10)[labels]
    emb = tsne_embedding(feats, perplexity=10, seed=3)
    z = (feats - feats.mean(0)) / feats.std(0)
    ref = TSNE(n_components=2, perplexity=10, init="pca", random_state=3).fit_transform(z)
    np.testing.assert_allclose(emb, ref, rtol=1e-6, atol=1e-6)
    png, svg = plot_tsne(emb, labels, tmp_path / "tsne")
    assert png.stat().st_size > 10_000
    assert svg.read_text().count("<path") > 10
    with pytest.raises(ValueError, match="embedding must be"):
        plot_tsne(emb[:, :1], labels, tmp_path / "x")
