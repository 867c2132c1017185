"""ICC against Shrout & Fleiss (1979) and pingouin; seed perturbation through the real chain."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin
import pytest
import torch
from mhub_fmcib_train.evaluation.stability import (
    ReaderCase,
    feature_agreement,
    icc,
    inter_reader_simulation,
    perturb_seeds,
)
from scipy.stats import pearsonr, spearmanr

from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.network import FmcibResNet
from mhub_fmcib.model.weights import LoadedWeights
from mhub_fmcib.patch import extract_patch
from mhub_fmcib.records import SeedPoint, Volume

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges
SF_TABLE2 = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)


def test_icc_shrout_fleiss_worked_example() -> None:
    t = icc(SF_TABLE2)
    published = {
        "ICC(1,1)": 0.17,
        "ICC(2,1)": 0.29,
        "ICC(3,1)": 0.71,
        "ICC(1,k)": 0.44,
        "ICC(2,k)": 0.62,
        "ICC(3,k)": 0.91,
    }
    for form, value in published.items():
        assert t[form] == pytest.approx(value, abs=0.005), form
    # the paper's mean squares (Table 3): BMS 11.24, WMS 6.26, JMS 32.49, EMS 1.02
    assert (t.bms, t.wms, t.jms, t.ems) == pytest.approx((11.24, 6.26, 32.49, 1.02), abs=0.005)


def test_icc_matches_pingouin() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (30, 1)) + rng.normal(0, 0.4, (30, 3)) + np.array([0, 0.2, -0.1])
    for data in (SF_TABLE2, x):
        n, k = data.shape
        long = pd.DataFrame(
            {"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n), "score": data.ravel()}
        )
        ref = pingouin.intraclass_corr(long, "target", "rater", "score").set_index("Type")["ICC"]
        ours = icc(data)
        for pg, form in [
            ("ICC(1,1)", "ICC(1,1)"),
            ("ICC(A,1)", "ICC(2,1)"),
            ("ICC(C,1)", "ICC(3,1)"),
            ("ICC(1,k)", "ICC(1,k)"),
            ("ICC(A,k)", "ICC(2,k)"),
            ("ICC(C,k)", "ICC(3,k)"),
        ]:  # pingouin 0.7 names
            assert ours[form] == pytest.approx(ref[pg], abs=1e-12), form


def test_feature_agreement_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(25, 4))
    b = a + rng.normal(0, 0.3, a.shape)
    b[:, 3] = 1.0  # constant feature -> NaN
    ag = feature_agreement(a, b)
    assert ag.spearman[0] == pytest.approx(spearmanr(a[:, 0], b[:, 0]).statistic)
    assert ag.r2[1] == pytest.approx(pearsonr(a[:, 1], b[:, 1]).statistic ** 2)
    assert np.isnan(ag.spearman[3])


def _volume(seed: int, bright: bool) -> Volume:
    rng = np.random.default_rng(seed)
    arr = rng.normal(-800, 30, (48, 48, 16)).astype(np.float32)
    i, j, k = np.meshgrid(*[np.arange(s) for s in arr.shape], indexing="ij")
    r = np.sqrt(((i - 24) * 0.8) ** 2 + ((j - 24) * 0.8) ** 2 + ((k - 8) * 2.5) ** 2)
    arr[r < 8] = 60.0 if bright else -300.0
    return Volume(arr, np.diag([0.8, 0.8, 2.5, 1.0]))


def test_perturb_seeds_statistics() -> None:
    vol = _volume(0, True)
    centre = SeedPoint(*vol.index_to_lps([24, 24, 8]))
    seeds = perturb_seeds(centre, vol, n=4000, sd_voxels=4.0, rng=np.random.default_rng(3), grid="image")
    offsets_vox = vol.lps_to_index(np.array([s.as_array() for s in seeds])) - [24, 24, 8]
    assert offsets_vox.std(0) == pytest.approx([4, 4, 4], rel=0.05)
    assert np.abs(offsets_vox.mean(0)).max() < 0.3
    iso = perturb_seeds(centre, vol, n=4000, grid="isotropic", rng=np.random.default_rng(3))
    mm = np.array([s.as_array() for s in iso]) - centre.as_array()
    assert mm.std(0) == pytest.approx([4, 4, 4], rel=0.05)
    # the default is the encoder's 1 mm grid
    default = perturb_seeds(centre, vol, n=4000, rng=np.random.default_rng(3))
    assert [s.as_array().tolist() for s in default] == [s.as_array().tolist() for s in iso]


class _SmallExtractor:
    """A narrow FMCIB-architecture trunk (random weights): (B, 50,50,50) -> (B, 256)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = FmcibResNet(widen_factor=0.125).eval()

    @torch.inference_mode()
    def extract(self, patches: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.model(torch.from_numpy(np.array(patches[:, None]))).numpy()
        return out


def _head(feats: np.ndarray) -> np.ndarray:
    z = feats.mean(1)
    return 1 / (1 + np.exp(-(z - 0.5) * 5))


def test_inter_reader_simulation_real_patches() -> None:
    cases = [
        ReaderCase(f"c{i}", _volume(i, i % 2 == 0), SeedPoint(*_volume(i, True).index_to_lps([24, 24, 8])), i % 2)
        for i in range(4)
    ]
    ext = _SmallExtractor()
    res = inter_reader_simulation(cases, ext, _head, n_perturbations=6, seed=5, grid="image")
    assert res.predictions.shape == (4, 6)
    assert res.aucs.shape == (6,)
    # the reference prediction equals the chain run by hand
    p0 = extract_patch(cases[1].volume, cases[1].seed).array
    assert res.reference[1] == pytest.approx(float(_head(ext.extract(p0[None]))[0]), rel=1e-5)
    # the perturbed predictions equal the chain at the same perturbed seeds
    rng = np.random.default_rng(5)
    s = perturb_seeds(cases[0].seed, cases[0].volume, 6, 4.0, rng, "image")
    p = np.stack([extract_patch(cases[0].volume, x).array for x in s])
    assert res.predictions[0] == pytest.approx(_head(ext.extract(p)), rel=1e-5)
    assert np.all(res.summary()["sd"] > 0)
    assert set(res.auc_summary()) == {"mean", "sd", "min", "max", "p2.5", "p97.5"}


def test_inter_reader_with_feature_extractor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = FmcibResNet().state_dict()
    weights = LoadedWeights(tmp_path / "w", hashlib.sha256(b"x").hexdigest(), sd)
    ext = FeatureExtractor(weights, device="cpu", batch_size=3)
    vol = _volume(0, True)
    case = ReaderCase("c0", vol, SeedPoint(*vol.index_to_lps([24, 24, 8])), 1)
    res = inter_reader_simulation([case], ext, _head, n_perturbations=2, seed=0, grid="image")
    assert np.all(np.isfinite(res.predictions))
    assert np.isnan(res.aucs).all()
    assert res.predictions[0, 0] != res.predictions[0, 1]


def test_test_retest_icc_is_the_authors_pingouin_row_2_with_icc21_beside_it() -> None:
    from mhub_fmcib_train.evaluation.stability import (
        ICC_ROLES,
        TEST_RETEST_ICC,
        TEST_RETEST_ICC_BESIDE,
        icc_table,
        test_retest_icc,
    )

    rng = np.random.default_rng(7)
    truth = rng.normal(0, 1, 40)
    ratings = np.column_stack([truth + rng.normal(0, 0.2, 40), truth + 0.3 + rng.normal(0, 0.2, 40)])  # a shift
    long = pd.DataFrame({"ID": np.repeat(np.arange(40), 2), "tag": np.tile(["a", "b"], 40), "pred_1": ratings.ravel()})
    authors = pingouin.intraclass_corr(data=long, targets="ID", raters="tag", ratings="pred_1")
    got = test_retest_icc(ratings)
    assert (TEST_RETEST_ICC, TEST_RETEST_ICC_BESIDE) == ("ICC(3,1)", "ICC(2,1)")
    # analysis/stability.py reports row 2 (pingouin < 0.7 names it ICC3, 0.7 ICC(C,1)); its
    # column position moved between versions, so read the ICC column of that row
    assert authors.iloc[2]["Type"] in ("ICC3", "ICC(C,1)")
    assert got.paper == pytest.approx(authors.iloc[2]["ICC"], abs=1e-12)
    assert got.absolute_agreement == pytest.approx(authors.iloc[1]["ICC"], abs=1e-12)  # ICC2 / ICC(A,1)
    assert got.absolute_agreement < got.paper  # the systematic shift lowers agreement, not consistency
    text = got.describe()
    assert "ICC(3,1)" in text and "paper's figure" in text and "ICC(2,1)" in text and "absolute agreement" in text
    table = icc_table(ratings).set_index("form")
    assert table.loc["ICC(3,1)", "role"] == ICC_ROLES["ICC(3,1)"] and "paper" in table.loc["ICC(3,1)", "role"]
    assert "beside" in table.loc["ICC(2,1)", "role"]
    assert table.loc["ICC(1,1)", "role"] == ""
