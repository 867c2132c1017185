"""Association of predictions with gene expression, and gene-set enrichment (offline).

* Expression: a CSV with genes as rows (first column = gene symbol) and samples as columns.
* Gene filter (the paper's): keep genes whose mean expression over the samples is above
  the cohort mean (the mean of all gene means), then the ``top_n`` (500) of those with the
  largest standard deviation (ddof=1).
* Correlation: **absolute Spearman** rank correlation (``method="spearman"``, default) or
  absolute Pearson, per gene, between expression and each model's prediction on the
  samples both have. Models are compared gene by gene with a two-sided Wilcoxon
  signed-rank test on the paired absolute correlations.
* Enrichment: genes with |correlation| > 0.1 are tested against each set of a GMT file
  (one set per line: name, description, genes…, tab-separated) by the hypergeometric
  upper tail ``P(X >= k)``, universe = the filtered genes; p-values are adjusted by
  Benjamini–Hochberg (``scipy.stats.false_discovery_control``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, hypergeom, pearsonr, spearmanr, wilcoxon

from mhub_fmcib.errors import ConfigError


def read_expression(path: Path) -> pd.DataFrame:
    """Genes × samples matrix from CSV (first column: gene symbols)."""
    df = pd.read_csv(path, index_col=0)
    if df.empty or not all(np.issubdtype(t, np.number) for t in df.dtypes):
        raise ConfigError(f"{path}: expected genes as rows and numeric samples as columns")
    df.index = df.index.astype(str)
    return df


def filter_genes(expr: pd.DataFrame, top_n: int = 500) -> pd.DataFrame:
    """Genes above the cohort mean expression, then the ``top_n`` by standard deviation."""
    means = expr.mean(axis=1)
    kept = expr[means > means.mean()]
    sd = kept.std(axis=1, ddof=1)
    order = sd.sort_values(ascending=False, kind="mergesort").index[:top_n]
    return kept.loc[order]


def gene_correlations(
    expr: pd.DataFrame, predictions: Mapping[str, pd.Series], method: str = "spearman"
) -> pd.DataFrame:
    """Absolute correlation of each gene with each model's predictions (genes × models)."""
    if method not in ("spearman", "pearson"):
        raise ConfigError(f"unknown correlation {method!r}; use 'spearman' or 'pearson'")
    fn = spearmanr if method == "spearman" else pearsonr
    out = {}
    for model, pred in predictions.items():
        common = [s for s in expr.columns if s in pred.index]
        if len(common) < 3:
            raise ConfigError(
                f"model {model!r}: only {len(common)} samples are in both the expression "
                "matrix and the predictions; check that sample ids match the case ids"
            )
        p = pred.loc[common].to_numpy(float)
        x = expr[common].to_numpy(float)
        out[model] = [abs(float(fn(row, p).statistic)) if np.ptp(row) > 0 else float("nan") for row in x]
    return pd.DataFrame(out, index=expr.index)


def compare_models(corr: pd.DataFrame, threshold: float = 0.1) -> pd.DataFrame:
    """Per model: mean/median |corr| and genes above ``threshold``; Wilcoxon vs the first model."""
    first = corr.columns[0]
    rows = []
    for m in corr.columns:
        row: dict[str, object] = {
            "model": m,
            "mean_abs_corr": float(corr[m].mean()),
            "median_abs_corr": float(corr[m].median()),
            f"n_genes_abs_corr_gt_{threshold}": int((corr[m] > threshold).sum()),
            "wilcoxon_p_vs_" + str(first): float("nan"),
        }
        if m != first:
            ok = corr[[m, first]].dropna()
            row["wilcoxon_p_vs_" + str(first)] = float(wilcoxon(ok[m], ok[first]).pvalue)
        rows.append(row)
    return pd.DataFrame(rows)


def read_gmt(path: Path) -> dict[str, frozenset[str]]:
    """Gene sets from a GMT file: ``name <tab> description <tab> gene <tab> gene …``."""
    sets: dict[str, frozenset[str]] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            raise ConfigError(f"{path}:{lineno}: a GMT line needs name, description and genes")
        sets[parts[0]] = frozenset(g for g in parts[2:] if g)
    if not sets:
        raise ConfigError(f"{path}: no gene sets found")
    return sets


def enrichment(
    selected: set[str] | frozenset[str],
    universe: set[str] | frozenset[str],
    gene_sets: Mapping[str, frozenset[str]],
) -> pd.DataFrame:
    """Hypergeometric over-representation of ``selected`` in each set, within ``universe``.

    Columns: ``gene_set, set_size`` (genes of the set in the universe), ``overlap, expected,
    p_value, q_value`` (BH), sorted by p. Sets with no gene in the universe are skipped.
    """
    sel = set(selected) & set(universe)
    big_m, big_n = len(universe), len(sel)
    rows = []
    for name, genes in gene_sets.items():
        in_u = set(genes) & set(universe)
        if not in_u:
            continue
        k = len(in_u & sel)
        rows.append(
            {
                "gene_set": name,
                "set_size": len(in_u),
                "overlap": k,
                "expected": big_n * len(in_u) / big_m,
                "p_value": float(hypergeom.sf(k - 1, big_m, len(in_u), big_n)),
            }
        )
    df = pd.DataFrame(rows, columns=["gene_set", "set_size", "overlap", "expected", "p_value"])
    df["q_value"] = false_discovery_control(df["p_value"].to_numpy()) if len(df) else []
    return df.sort_values("p_value", kind="mergesort").reset_index(drop=True)
