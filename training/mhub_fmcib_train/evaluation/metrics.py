"""Classification metrics, bootstrap confidence intervals and paired permutation tests.

Conventions:

* ``y``: integer class labels, shape (n,). Binary tasks use 0/1.
* ``scores``: binary tasks: probability of class 1, shape (n,); multi-class tasks:
  per-class probabilities, shape (n, C), column ``c`` for label ``c``.
* Balanced accuracy thresholds binary scores at 0.5 (class 1 when ``score >= 0.5``) and
  takes the arg-max for multi-class scores; it is the mean recall over the classes
  present in ``y``.
* Average precision is the step-wise area of scikit-learn (``sum (R_k - R_{k-1}) P_k``);
  mean average precision is its one-vs-rest mean over the classes present in ``y``.
* Bootstrap: ``n_resamples`` (default 9,999) resamples of cases with replacement drawn as
  ``numpy.random.default_rng(seed).integers(0, n, (n_resamples, n))``; the 95 % interval is
  the **percentile** interval (2.5th and 97.5th percentiles, linear interpolation), as
  ``scipy.stats.bootstrap(method="percentile")``. Resamples on which a metric is undefined
  (one class only for AUC/AP) are dropped and counted.
* Permutation test between two models on the same cases: for each of ``n_permutations``
  (default 1,000) permutations, each case's two predictions are swapped with probability
  1/2; the statistic is ``metric(A) - metric(B)``. Two-sided p-value is twice the smaller
  one-sided p-value, each ``(count + 1) / (n_permutations + 1)``, clipped to 1 (as
  ``scipy.stats.permutation_test(permutation_type="samples")``). When ``2**n`` does not
  exceed ``n_permutations`` all swaps are enumerated and the p-value is exact.
* Protocols (:data:`STAT_PROTOCOLS`, by name): ``"paper"`` (default) — 9,999 bootstrap
  resamples, 1,000 permutations, two-sided p as above; ``"authors_code"`` — what the
  authors' ``analysis/utils.py`` (``get_model_comparison_stats``, ``N_RESAMPLES = 1000``)
  computes: 1,000 resamples, 1,000 permutations and the **one-sided** p-value
  ``mean(null >= observed)`` (A better than B; no +1 correction).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import rankdata

from mhub_fmcib.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Metric = Callable[[IntArray, FloatArray], float]

#: Bootstrap resamples used by the paper.
N_BOOTSTRAP = 9_999
#: Permutations used by the paper for model comparisons.
N_PERMUTATIONS = 1_000

Alternative = Literal["two-sided", "greater_authors_code"]


@dataclass(frozen=True)
class StatProtocol:
    """Resample counts and p-value rule of a statistics protocol."""

    name: str
    n_resamples: int
    n_permutations: int
    alternative: Alternative
    description: str


#: The named protocols: the paper's text (default) and the authors' released code.
STAT_PROTOCOLS: dict[str, StatProtocol] = {
    "paper": StatProtocol("paper", N_BOOTSTRAP, N_PERMUTATIONS, "two-sided",
                          "paper: 9,999 bootstrap resamples; 1,000 permutations, two-sided p"),
    "authors_code": StatProtocol("authors_code", 1_000, 1_000, "greater_authors_code",
                                 "authors' code (analysis/utils.py): 1,000 resamples; 1,000 permutations, "
                                 "one-sided p = mean(null >= observed)"),
}  # fmt: skip


def get_protocol(name: str) -> StatProtocol:
    """The protocol called ``name``; :class:`ConfigError` listing the known names otherwise."""
    if name not in STAT_PROTOCOLS:
        raise ConfigError(f"unknown statistics protocol {name!r}; choose from {sorted(STAT_PROTOCOLS)}")
    return STAT_PROTOCOLS[name]


def _check(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    yy = np.asarray(y)
    ss = np.asarray(scores, dtype=np.float64)
    if yy.ndim != 1 or ss.ndim not in (1, 2) or ss.shape[0] != yy.shape[0]:
        raise ValueError(f"labels must be (n,) and scores (n,) or (n, C); got {yy.shape} and {ss.shape}")
    if not np.all(np.isfinite(ss)):
        raise ValueError("scores contain NaN or infinite values; drop or fix those cases first")
    return yy.astype(np.int64), ss


def balanced_accuracy(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mean per-class recall; binary scores thresholded at 0.5, multi-class by arg-max."""
    yy, ss = _check(y, scores)
    pred = (ss >= 0.5).astype(np.int64) if ss.ndim == 1 else np.argmax(ss, axis=1)
    recalls = [float(np.mean(pred[yy == c] == c)) for c in np.unique(yy)]
    return float(np.mean(recalls))


def auc_roc(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Binary AUC-ROC by the Mann–Whitney rank formula (ties count one half); NaN if one class."""
    yy, ss = _check(y, scores)
    if ss.ndim != 1:
        raise ValueError(f"auc_roc needs binary scores (n,), got {ss.shape}")
    pos = yy == 1
    n1 = int(pos.sum())
    n0 = yy.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(ss)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def average_precision(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Binary average precision (scikit-learn's definition); NaN if there is no positive."""
    yy, ss = _check(y, scores)
    if ss.ndim != 1:
        raise ValueError(f"average_precision needs binary scores (n,), got {ss.shape}")
    order = np.argsort(-ss, kind="mergesort")
    s_sorted = ss[order]
    t = (yy[order] == 1).astype(np.float64)
    if t.sum() == 0:
        return float("nan")
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), t.size - 1]
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """One-vs-rest mean of :func:`average_precision` over the classes present in ``y``."""
    yy, ss = _check(y, scores)
    if ss.ndim != 2:
        raise ValueError(f"mean_average_precision needs (n, C) scores, got {ss.shape}")
    aps = [average_precision((yy == c).astype(np.int64), ss[:, c]) for c in np.unique(yy)]
    return float(np.mean(aps))


#: Metric name -> function, as used by tables and commands.
METRICS: dict[str, Metric] = {
    "balanced_accuracy": balanced_accuracy,
    "mean_average_precision": mean_average_precision,
    "auc_roc": auc_roc,
    "average_precision": average_precision,
}

#: The paper's metrics per task kind.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc_roc", "average_precision", "balanced_accuracy"),
    "multiclass": ("balanced_accuracy", "mean_average_precision"),
}


def get_metric(name: str) -> Metric:
    """The metric called ``name``; :class:`ConfigError` listing the known names otherwise."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; choose from {sorted(METRICS)}")
    return METRICS[name]


@dataclass(frozen=True)
class ConfidenceInterval:
    """A metric on all cases and its bootstrap percentile interval."""

    metric: str
    estimate: float
    low: float
    high: float
    confidence_level: float
    n_resamples: int
    n_undefined: int
    seed: int
    method: str = "percentile"


def bootstrap_distribution(
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    metric: Metric,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
) -> FloatArray:
    """The metric on each of ``n_resamples`` case resamples, shape (n_resamples,) (NaN = undefined).

    Indices are ``default_rng(seed).integers(0, n, (n_resamples, n))``, the draw of
    ``scipy.stats.bootstrap`` with ``rng=default_rng(seed)``.
    """
    yy, ss = _check(y, scores)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    idx = np.random.default_rng(seed).integers(0, yy.size, (n_resamples, yy.size))
    return np.array([metric(yy[i], ss[i]) for i in idx], dtype=np.float64)


def bootstrap_ci(
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    metric: str,
    n_resamples: int = N_BOOTSTRAP,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``metric`` (see the module docstring)."""
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    fn = get_metric(metric)
    dist = bootstrap_distribution(y, scores, fn, n_resamples, seed)
    ok = dist[np.isfinite(dist)]
    alpha = (1 - confidence_level) / 2
    low, high = np.quantile(ok, [alpha, 1 - alpha]) if ok.size else (np.nan, np.nan)
    return ConfidenceInterval(
        metric=metric,
        estimate=fn(*_check(y, scores)),
        low=float(low),
        high=float(high),
        confidence_level=confidence_level,
        n_resamples=n_resamples,
        n_undefined=int(dist.size - ok.size),
        seed=seed,
    )


@dataclass(frozen=True)
class PermutationResult:
    """Paired permutation test of ``metric(A) - metric(B)`` (``alternative`` says which p)."""

    metric: str
    difference: float
    p_value: float
    n_permutations: int
    exact: bool
    seed: int
    alternative: str = "two-sided"


def paired_permutation_test(
    y: npt.ArrayLike,
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    metric: str,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    alternative: Alternative = "two-sided",
) -> PermutationResult:
    """Paired permutation test between two models' predictions on the same cases:
    two-sided (default) or the authors' code's one-sided ``mean(null >= observed)``."""
    fn = get_metric(metric)
    yy, sa = _check(y, scores_a)
    _, sb = _check(y, scores_b)
    if sa.shape != sb.shape:
        raise ValueError(f"the two models' scores differ in shape: {sa.shape} vs {sb.shape}")
    n = yy.size
    observed = fn(yy, sa) - fn(yy, sb)
    exact = n_permutations >= 2**n
    if exact:
        masks = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    else:
        masks = np.random.default_rng(seed).random((n_permutations, n)) < 0.5
    expand = (slice(None), None) if sa.ndim == 2 else (slice(None),)
    null = np.empty(masks.shape[0])
    for k, m in enumerate(masks):
        mm = m[expand]
        null[k] = fn(yy, np.where(mm, sb, sa)) - fn(yy, np.where(mm, sa, sb))
    if alternative == "greater_authors_code":
        p = float(np.mean(null >= observed))
        return PermutationResult(metric, float(observed), p, int(null.size), exact, seed, alternative)
    if alternative != "two-sided":
        raise ConfigError(f"unknown alternative {alternative!r}; use 'two-sided' or 'greater_authors_code'")
    gamma = abs(observed) * np.finfo(np.float64).eps * 100
    adjust = 0 if exact else 1
    p_less = (np.sum(null <= observed + gamma) + adjust) / (null.size + adjust)
    p_greater = (np.sum(null >= observed - gamma) + adjust) / (null.size + adjust)
    p = float(min(1.0, 2 * min(p_less, p_greater)))
    return PermutationResult(metric, float(observed), p, int(null.size), exact, seed, alternative)


def comparison_table(
    y: npt.ArrayLike,
    model_scores: Mapping[str, npt.ArrayLike],
    metrics: tuple[str, ...],
    reference: str | None = None,
    n_resamples: int = N_BOOTSTRAP,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    alternative: Alternative = "two-sided",
) -> pd.DataFrame:
    """One row per (model, metric) like the paper's Extended Data Tables 1–2.

    Columns: ``model, metric, estimate, ci_low, ci_high, summary`` (``0.912 (0.874–0.946)``),
    and, when ``reference`` names one of the models, ``reference, difference`` (model minus
    reference) and ``p_value`` (paired permutation test; empty for the reference itself).
    """
    if reference is not None and reference not in model_scores:
        raise ConfigError(f"reference model {reference!r} is not among {sorted(model_scores)}")
    rows: list[dict[str, object]] = []
    for metric in metrics:
        for name, scores in model_scores.items():
            ci = bootstrap_ci(y, scores, metric, n_resamples, seed=seed)
            row: dict[str, object] = {
                "model": name,
                "metric": metric,
                "estimate": ci.estimate,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "summary": f"{ci.estimate:.3f} ({ci.low:.3f}–{ci.high:.3f})",
            }
            if reference is not None:
                row["reference"] = reference
                if name == reference:
                    row["difference"] = float("nan")
                    row["p_value"] = float("nan")
                else:
                    pt = paired_permutation_test(y, scores, model_scores[reference], metric, n_permutations, seed,
                                                 alternative)  # fmt: skip
                    row["difference"] = pt.difference
                    row["p_value"] = pt.p_value
            rows.append(row)
    return pd.DataFrame(rows)
