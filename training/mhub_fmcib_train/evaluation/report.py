"""One folder of tables (CSV + Markdown) and figures for a study, from a predictions table.

Predictions table (CSV), one row per case:

* ``case_id``; ``split`` (``train``/``tune``/``test``; metrics use the ``test`` rows, or
  every row if there is no ``test`` split); ``label`` (integer class);
* per model, binary: ``pred_<model>`` = probability of class 1; multi-class:
  ``pred_<model>__<c>`` = probability of class ``c`` for each class label ``c``;
* optional ``time`` and ``event`` (1 = event): survival analysis with the threshold chosen
  on the ``tune`` rows.

When models named ``foundation`` and ``radiomics`` are both present, a
foundation-vs-radiomics table gives both estimates, their difference and the permutation p.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from mhub_fmcib.errors import ConfigError

from .metrics import (
    N_BOOTSTRAP,
    N_PERMUTATIONS,
    TASK_METRICS,
    Alternative,
    comparison_table,
    paired_permutation_test,
)
from .survival import plot_kaplan_meier, survival_analysis, survival_table
from .tables import write_table

PRED_PREFIX = "pred_"


@dataclass(frozen=True)
class ModelScores:
    """One model's score columns: a single binary column or one per class."""

    name: str
    columns: tuple[str, ...]
    classes: tuple[int, ...]

    def scores(self, df: pd.DataFrame) -> npt.NDArray[np.float64]:
        """(n,) for binary, (n, C) for multi-class (columns ordered by class label)."""
        if len(self.columns) == 1:
            return df[self.columns[0]].to_numpy(np.float64)
        return df[list(self.columns)].to_numpy(np.float64)


def find_models(df: pd.DataFrame) -> list[ModelScores]:
    """Models from ``pred_<model>`` / ``pred_<model>__<class>`` columns, in column order."""
    found: dict[str, list[tuple[int, str]]] = {}
    for col in df.columns:
        if not str(col).startswith(PRED_PREFIX):
            continue
        rest = str(col)[len(PRED_PREFIX) :]
        name, sep, cls = rest.partition("__")
        if sep and not cls.lstrip("-").isdigit():
            raise ConfigError(f"column {col!r}: the class after '__' must be an integer label")
        found.setdefault(name, []).append((int(cls) if sep else -1, str(col)))
    if not found:
        raise ConfigError(
            f"no prediction columns found; expected 'pred_<model>' or 'pred_<model>__<class>', got {list(df.columns)}"
        )
    models = []
    for name, cols in found.items():
        cols.sort()
        models.append(ModelScores(name, tuple(c for _, c in cols), tuple(k for k, _ in cols)))
    return models


def read_predictions(path: Path) -> pd.DataFrame:
    """Read and check a predictions CSV (see module docstring)."""
    df = pd.read_csv(path, dtype={"case_id": str})
    missing = {"case_id", "label"} - set(df.columns)
    if missing:
        raise ConfigError(f"{path}: missing columns {sorted(missing)}")
    find_models(df)
    return df


@dataclass(frozen=True)
class Report:
    """Where the report's files are."""

    folder: Path
    tables: tuple[Path, ...]
    figures: tuple[Path, ...]


def write_report(
    df: pd.DataFrame,
    out_dir: Path,
    reference: str | None = None,
    n_resamples: int = N_BOOTSTRAP,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    threshold_rule: str = "median",
    time_unit: str = "days",
    alternative: Alternative = "two-sided",
) -> Report:
    """Write metrics (with CIs and permutation p vs ``reference``), foundation-vs-radiomics,
    survival tables and Kaplan–Meier figures into ``out_dir``; return the paths."""
    models = find_models(df)
    names = [m.name for m in models]
    if reference is None:
        reference = "foundation" if "foundation" in names else names[0]
    has_split = "split" in df.columns
    test = df[df["split"] == "test"] if has_split and (df["split"] == "test").any() else df
    y = test["label"].to_numpy()
    multiclass = any(len(m.columns) > 1 for m in models)
    if multiclass and not all(len(m.columns) > 1 for m in models):
        raise ConfigError("mixing binary and multi-class models in one report is not supported")
    metrics = TASK_METRICS["multiclass" if multiclass else "binary"]
    scores = {m.name: m.scores(test) for m in models}
    tables: list[Path] = []
    figures: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    cmp = comparison_table(y, scores, metrics, reference, n_resamples, n_permutations, seed, alternative)
    tables += write_table(
        cmp,
        out_dir / "metrics",
        f"Test-set metrics ({len(y)} cases); 95 % percentile bootstrap CI, {n_resamples} "
        f"resamples; paired permutation p vs {reference}, {n_permutations} permutations, {alternative}",
    )
    if "foundation" in scores and "radiomics" in scores:
        rows = []
        for metric in metrics:
            f = cmp[(cmp.model == "foundation") & (cmp.metric == metric)].iloc[0]
            r = cmp[(cmp.model == "radiomics") & (cmp.metric == metric)].iloc[0]
            pt = paired_permutation_test(y, scores["foundation"], scores["radiomics"], metric, n_permutations, seed,
                                         alternative)  # fmt: skip
            rows.append(
                {
                    "metric": metric,
                    "foundation": f.summary,
                    "radiomics": r.summary,
                    "difference": float(f.estimate - r.estimate),
                    "p_value": pt.p_value,
                }
            )
        tables += write_table(
            pd.DataFrame(rows),
            out_dir / "foundation_vs_radiomics",
            "Foundation features vs pyradiomics baseline (test set)",
        )
    if {"time", "event"} <= set(df.columns) and not multiclass and has_split:
        tune = df[df["split"] == "tune"]
        if tune.empty:
            raise ConfigError("survival analysis needs 'tune' rows to choose the threshold")
        results = []
        for m in models:
            res = survival_analysis(
                m.name,
                m.scores(tune),
                m.scores(test),
                test["time"],
                test["event"],
                threshold_rule,
                tune["time"],
                tune["event"],
            )
            results.append(res)
            figures += plot_kaplan_meier(
                res,
                m.scores(test),
                test["time"],
                test["event"],
                out_dir / f"km_{m.name}",
                time_unit,
            )
        tables += write_table(
            survival_table(results),
            out_dir / "survival",
            f"Survival on test: threshold = {threshold_rule} rule on tune predictions",
        )
    lines = ["# Evaluation report", "", f"Cases: {len(df)}; test cases: {len(y)}.", ""]
    lines += [f"- table: [{p.name}]({p.name})" for p in tables]
    lines += [f"- figure: [{p.name}]({p.name})" for p in figures]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Report(out_dir, tuple(tables), tuple(figures))
