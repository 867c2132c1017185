"""End-to-end report: a labelled synthetic table, the CLI, and the synthetic lesion cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mhub_fmcib_train.evaluation.cli import add_evaluate_subcommands, add_radiomics_subcommand
from mhub_fmcib_train.evaluation.report import write_report
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score


def _table(n: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    f = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1, n))))
    r = 1 / (1 + np.exp(-(0.8 * (y - 0.5) + rng.normal(0, 1, n))))
    time = rng.exponential(np.exp(-1.5 * f) * 700)
    return pd.DataFrame(
        {
            "case_id": [f"c{i:03d}" for i in range(n)],
            "split": np.where(np.arange(n) < n // 2, "tune", "test"),
            "label": y,
            "pred_foundation": f,
            "pred_radiomics": r,
            "time": time,
            "event": (rng.random(n) < 0.8).astype(int),
        }
    )


def test_report_binary_with_survival(tmp_path: Path) -> None:
    df = _table()
    rep = write_report(df, tmp_path / "rep", n_resamples=300, n_permutations=200)
    names = {p.name for p in rep.tables}
    assert {"metrics.csv", "metrics.md", "foundation_vs_radiomics.csv", "survival.csv"} <= names
    test = df[df.split == "test"]
    m = pd.read_csv(tmp_path / "rep/metrics.csv")
    auc = m[(m.model == "radiomics") & (m.metric == "auc_roc")].iloc[0]
    assert auc.estimate == pytest.approx(roc_auc_score(test.label, test.pred_radiomics))
    assert auc.ci_low < auc.estimate < auc.ci_high
    assert 0 < auc.p_value <= 1
    fr = pd.read_csv(tmp_path / "rep/foundation_vs_radiomics.csv").set_index("metric")
    assert fr.loc["auc_roc", "difference"] == pytest.approx(
        roc_auc_score(test.label, test.pred_foundation) - auc.estimate
    )
    assert fr.loc["auc_roc", "p_value"] == pytest.approx(auc.p_value)  # two-sided, symmetric
    s = pd.read_csv(tmp_path / "rep/survival.csv").set_index("model")
    tune = df[df.split == "tune"]
    assert s.loc["foundation", "threshold"] == pytest.approx(tune.pred_foundation.median())
    assert {p.name for p in rep.figures} == {
        "km_foundation.png",
        "km_foundation.svg",
        "km_radiomics.png",
        "km_radiomics.svg",
    }
    assert "| model | metric |" in (tmp_path / "rep/metrics.md").read_text()


def test_report_multiclass_via_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 90
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n) + np.eye(3)[y]
    p /= p.sum(1, keepdims=True)
    df = pd.DataFrame({"case_id": range(n), "split": "test", "label": y})
    for c in range(3):
        df[f"pred_foundation__{c}"] = p[:, c]
        df[f"pred_supervised__{c}"] = np.roll(p, 1, axis=0)[:, c]
    csv = tmp_path / "pred.csv"
    df.to_csv(csv, index=False)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_evaluate_subcommands(sub)
    add_radiomics_subcommand(sub)
    args = parser.parse_args(
        [
            "evaluate",
            "report",
            "--predictions",
            str(csv),
            "--out",
            str(tmp_path / "out"),
            "--n-resamples",
            "200",
            "--n-permutations",
            "100",
        ]
    )
    assert args.func(args) == 0
    m = pd.read_csv(tmp_path / "out/metrics.csv")
    assert set(m.metric) == {"balanced_accuracy", "mean_average_precision"}
    assert not (tmp_path / "out/survival.csv").exists()


def test_report_on_synthetic_cohort(tmp_path: Path) -> None:
    """Synthetic cohort -> pyradiomics features -> two logistic probes -> report."""
    synthetic = pytest.importorskip("mhub_fmcib_train.synthetic")
    from mhub_fmcib_train.config import SyntheticConfig
    from mhub_fmcib_train.evaluation.radiomics_baseline import RadiomicsCase, radiomics_table

    cohort = synthetic.generate_cohort(
        SyntheticConfig(output_dir=tmp_path / "c", n_scans=20, shape=(64, 64, 24), seed=3)
    )
    lesions = pd.read_csv(cohort.seeds_csv, dtype={"lesion_id": str})
    cases = [
        RadiomicsCase(r.lesion_id, Path(r.image_path), Path(r.mask_path), int(r.mask_label))
        for r in lesions.itertuples()
    ]
    feats = radiomics_table(cases).set_index("case_id").loc[lesions.lesion_id]
    y = lesions["malignant"].to_numpy()
    train = (lesions["split"] == "train").to_numpy()
    table = lesions[["lesion_id", "split", "time", "event"]]
    table = table.rename(columns={"lesion_id": "case_id"})
    table["label"] = y
    for name, cols in (
        ("radiomics", [c for c in feats.columns if "firstorder" in c]),
        ("foundation", [c for c in feats.columns if "glcm" in c]),
    ):
        x = feats[cols].to_numpy(float)
        x = (x - x[train].mean(0)) / np.where(x[train].std(0) > 0, x[train].std(0), 1)
        clf = LogisticRegression(C=0.1, max_iter=2000).fit(x[train], y[train])
        table[f"pred_{name}"] = clf.predict_proba(x)[:, 1]
    rep = write_report(table, tmp_path / "rep", n_resamples=200, n_permutations=100)
    assert (tmp_path / "rep/foundation_vs_radiomics.md").is_file()
    assert len(rep.figures) == 4
    m = pd.read_csv(tmp_path / "rep/metrics.csv")
    assert m.estimate.between(0, 1).all()
