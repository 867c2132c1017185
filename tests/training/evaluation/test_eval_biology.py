"""Gene filter, correlations and enrichment against scipy, Fisher's exact test and pingouin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pingouin
import pytest
from mhub_fmcib_train.evaluation.biology import (
    compare_models,
    enrichment,
    filter_genes,
    gene_correlations,
    read_gmt,
)
from scipy.stats import fisher_exact, spearmanr


def test_filter_and_correlations() -> None:
    rng = np.random.default_rng(0)
    expr = pd.DataFrame(
        rng.gamma(2, rng.uniform(0.5, 5, (40, 1)), (40, 12)),
        index=[f"G{i}" for i in range(40)],
        columns=[f"s{j}" for j in range(12)],
    )
    kept = filter_genes(expr, top_n=5)
    means = expr.mean(1)
    above = means[means > means.mean()].index
    assert set(kept.index) <= set(above)
    assert len(kept) == 5
    assert list(kept.index) == list(expr.loc[above].std(1).nlargest(5).index)
    pred = pd.Series(rng.random(12), index=expr.columns)
    corr = gene_correlations(kept, {"a": pred, "b": pred[::-1].set_axis(expr.columns)})
    g = kept.index[0]
    assert corr.loc[g, "a"] == pytest.approx(abs(spearmanr(kept.loc[g], pred).statistic))
    table = compare_models(corr)
    assert list(table.model) == ["a", "b"]
    assert 0 <= table.iloc[1, -1] <= 1


def test_enrichment_vs_fisher_and_bh(tmp_path: Path) -> None:
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("S1\tdesc\tG0\tG1\tG2\tG3\tG4\nS2\tdesc\tG5\tG9\tG30\nS3\td\tX1\tG8\n")
    sets = read_gmt(gmt)
    universe = {f"G{i}" for i in range(20)}
    selected = {"G0", "G1", "G2", "G5", "G11"}
    df = enrichment(selected, universe, sets).set_index("gene_set")
    for name, genes in sets.items():
        gs = set(genes) & universe
        k = len(gs & selected)
        table = [[k, len(selected) - k], [len(gs) - k, len(universe) - len(gs) - len(selected) + k]]
        assert df.loc[name, "p_value"] == pytest.approx(fisher_exact(table, alternative="greater").pvalue, rel=1e-10)
    _, q = pingouin.multicomp(df["p_value"].to_numpy(), method="fdr_bh")
    np.testing.assert_allclose(df["q_value"], q, rtol=1e-12)
    assert df.loc["S1", "overlap"] == 3
