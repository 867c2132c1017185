"""Log-rank and Cox against lifelines and its documented examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi, load_waltons
from lifelines.statistics import logrank_test
from mhub_fmcib_train.evaluation.survival import (
    choose_threshold,
    cox_hazard_ratios,
    logrank,
    plot_kaplan_meier,
    survival_analysis,
)


def test_logrank_waltons_documented() -> None:
    df = load_waltons()
    ix = df["group"] == "miR-137"
    ours = logrank(df["T"][ix], df["E"][ix], df["T"][~ix], df["E"][~ix])
    # lifelines docs (Survival analysis > "Comparing survival"): test_statistic 122.25
    assert ours.statistic == pytest.approx(122.25, abs=0.005)
    ref = logrank_test(df["T"][ix], df["T"][~ix], df["E"][ix], df["E"][~ix])
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-8)


def test_logrank_random_censored_matches_lifelines() -> None:
    rng = np.random.default_rng(0)
    t = np.round(rng.exponential(10, 80))  # ties
    e = rng.random(80) < 0.7
    g = rng.random(80) < 0.5
    ours = logrank(t[g], e[g], t[~g], e[~g])
    ref = logrank_test(t[g], t[~g], e[g], e[~g])
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-10)


def test_cox_rossi_documented() -> None:
    df = load_rossi()
    cov = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
    res = {r.covariate: r for r in cox_hazard_ratios(df, "week", "arrest", cov)}
    # lifelines docs (Survival regression > Cox's proportional hazard model), rounded coefs
    documented = {"fin": -0.38, "age": -0.06, "race": 0.31, "wexp": -0.15, "mar": -0.43, "paro": -0.08, "prio": 0.09}
    for name, coef in documented.items():
        assert res[name].coef == pytest.approx(coef, abs=0.005), name
    assert res["prio"].hazard_ratio == pytest.approx(1.10, abs=0.005)
    assert res["prio"].hr_low < res["prio"].hazard_ratio < res["prio"].hr_high


def test_threshold_rules_and_km_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 120
    risk = rng.random(n)
    t = rng.exponential(np.exp(-2 * risk) * 20)
    e = (rng.random(n) < 0.8).astype(int)
    tune, test = slice(0, 60), slice(60, None)
    assert choose_threshold(risk[tune]) == pytest.approx(np.median(risk[tune]))
    cut = choose_threshold(risk[tune], t[tune], e[tune], rule="logrank")
    s = risk[tune]
    best = max(
        (logrank(t[tune][s > c], e[tune][s > c], t[tune][s <= c], e[tune][s <= c]).statistic, c)
        for c in np.unique(s[(s >= np.quantile(s, 0.1)) & (s < np.quantile(s, 0.9))])
    )
    assert cut == best[1]
    res = survival_analysis("m", risk[tune], risk[test], t[test], e[test])
    assert res.n_high + res.n_low == 60
    assert res.cox.hazard_ratio > 1  # higher score = higher risk by construction
    png, svg = plot_kaplan_meier(res, risk[test], t[test], e[test], tmp_path / "km")
    assert png.stat().st_size > 10_000
    assert b"<svg" in svg.read_bytes()[:500]
    df = pd.DataFrame({"t": t[test], "e": e[test], "h": (risk[test] > res.threshold) * 1.0})
    assert res.cox.hazard_ratio == pytest.approx(cox_hazard_ratios(df, "t", "e", ["h"])[0].hazard_ratio)
