"""Survival analysis of model predictions: tune-set threshold, Kaplan–Meier, log-rank, Cox.

* Times are in any unit (the report labels them as given, e.g. days); ``event`` is 1 for
  an observed death/event and 0 for censoring.
* Higher prediction = higher risk. The **threshold is chosen on the tune set only**:
  rule ``"median"`` (default) is the median of the tune-set predictions; rule
  ``"logrank"`` is the cut among the tune predictions between their 10th and 90th
  percentiles that maximises the log-rank statistic on the tune set. Test cases with
  ``score > threshold`` form the high-risk group.
* Log-rank: the two-group Mantel–Cox test (chi-square, 1 degree of freedom), computed here
  in NumPy and cross-checked against lifelines in the tests.
* Cox: lifelines' ``CoxPHFitter`` (Efron ties); the univariate hazard ratio is for the
  binary high-risk indicator, with its Wald 95 % interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import chi2

from mhub_fmcib.errors import ConfigError
from mhub_fmcib_train.evaluation.tables import save_figure

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LogRankResult:
    """Two-group log-rank test: chi-square statistic (1 df) and p-value."""

    statistic: float
    p_value: float
    observed_a: float
    expected_a: float


def logrank(
    time_a: npt.ArrayLike, event_a: npt.ArrayLike, time_b: npt.ArrayLike, event_b: npt.ArrayLike
) -> LogRankResult:
    """Mantel–Cox log-rank test comparing group A with group B."""
    ta, ea = np.asarray(time_a, float), np.asarray(event_a, float)
    tb, eb = np.asarray(time_b, float), np.asarray(event_b, float)
    if ta.size == 0 or tb.size == 0:
        raise ValueError(f"log-rank needs two non-empty groups, got {ta.size} and {tb.size}")
    t = np.r_[ta, tb]
    e = np.r_[ea, eb]
    g = np.r_[np.ones(ta.size), np.zeros(tb.size)]
    times = np.unique(t[e > 0])
    at_risk = (t[None, :] >= times[:, None]).astype(float)
    died = ((t[None, :] == times[:, None]) & (e[None, :] > 0)).astype(float)
    n = at_risk.sum(1)
    n_a = (at_risk * g).sum(1)
    d = died.sum(1)
    d_a = (died * g).sum(1)
    expected = d * n_a / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 1, d * (n_a / n) * (1 - n_a / n) * (n - d) / (n - 1), 0.0)
    stat = float((d_a.sum() - expected.sum()) ** 2 / var.sum())
    return LogRankResult(stat, float(chi2.sf(stat, 1)), float(d_a.sum()), float(expected.sum()))


@dataclass(frozen=True)
class CoxResult:
    """One covariate of a Cox model: log hazard ratio, hazard ratio, 95 % CI, Wald p."""

    covariate: str
    coef: float
    hazard_ratio: float
    hr_low: float
    hr_high: float
    p_value: float


def cox_hazard_ratios(df: pd.DataFrame, duration_col: str, event_col: str, covariates: list[str]) -> list[CoxResult]:
    """Fit a Cox proportional-hazards model (lifelines, Efron ties) and return each covariate."""
    from lifelines import CoxPHFitter

    missing = [c for c in [duration_col, event_col, *covariates] if c not in df.columns]
    if missing:
        raise ConfigError(f"columns {missing} are missing; the table has {list(df.columns)}")
    cph = CoxPHFitter().fit(df[[duration_col, event_col, *covariates]], duration_col, event_col)
    s = cph.summary
    return [
        CoxResult(
            covariate=c,
            coef=float(s.loc[c, "coef"]),
            hazard_ratio=float(s.loc[c, "exp(coef)"]),
            hr_low=float(s.loc[c, "exp(coef) lower 95%"]),
            hr_high=float(s.loc[c, "exp(coef) upper 95%"]),
            p_value=float(s.loc[c, "p"]),
        )
        for c in covariates
    ]


def choose_threshold(
    scores: npt.ArrayLike,
    time: npt.ArrayLike | None = None,
    event: npt.ArrayLike | None = None,
    rule: str = "median",
) -> float:
    """Risk threshold from the **tune** set (see module docstring for the rules)."""
    s = np.asarray(scores, float)
    if s.size < 2:
        raise ValueError(f"need at least 2 tune predictions to choose a threshold, got {s.size}")
    if rule == "median":
        return float(np.median(s))
    if rule == "logrank":
        if time is None or event is None:
            raise ConfigError("rule 'logrank' needs tune-set time and event")
        t, e = np.asarray(time, float), np.asarray(event, float)
        lo, hi = np.quantile(s, [0.1, 0.9])
        best, best_stat = float(np.median(s)), -1.0
        for c in np.unique(s[(s >= lo) & (s < hi)]):
            high = s > c
            if high.all() or not high.any():
                continue
            stat = logrank(t[high], e[high], t[~high], e[~high]).statistic
            if stat > best_stat:
                best, best_stat = float(c), stat
        return best
    raise ConfigError(f"unknown threshold rule {rule!r}; use 'median' or 'logrank'")


@dataclass(frozen=True)
class SurvivalResult:
    """Test-set survival analysis of one model's predictions."""

    model: str
    threshold: float
    threshold_rule: str
    n_high: int
    n_low: int
    logrank: LogRankResult
    cox: CoxResult


def survival_analysis(
    model: str,
    tune_scores: npt.ArrayLike,
    test_scores: npt.ArrayLike,
    test_time: npt.ArrayLike,
    test_event: npt.ArrayLike,
    rule: str = "median",
    tune_time: npt.ArrayLike | None = None,
    tune_event: npt.ArrayLike | None = None,
) -> SurvivalResult:
    """Threshold on tune, then log-rank and univariate Cox (high- vs low-risk) on test."""
    thr = choose_threshold(tune_scores, tune_time, tune_event, rule)
    s = np.asarray(test_scores, float)
    t = np.asarray(test_time, float)
    e = np.asarray(test_event, float)
    high = s > thr
    if high.all() or not high.any():
        raise ValueError(
            f"threshold {thr:.4g} puts all {s.size} test cases in one group; "
            "the tune and test predictions do not overlap"
        )
    lr = logrank(t[high], e[high], t[~high], e[~high])
    df = pd.DataFrame({"time": t, "event": e, "high_risk": high.astype(float)})
    cox = cox_hazard_ratios(df, "time", "event", ["high_risk"])[0]
    return SurvivalResult(model, thr, rule, int(high.sum()), int((~high).sum()), lr, cox)


def plot_kaplan_meier(
    result: SurvivalResult,
    test_scores: npt.ArrayLike,
    test_time: npt.ArrayLike,
    test_event: npt.ArrayLike,
    stem: Path,
    time_unit: str = "days",
) -> tuple[Path, Path]:
    """Kaplan–Meier curves of the two risk groups with numbers at risk; writes PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    s = np.asarray(test_scores, float)
    t = np.asarray(test_time, float)
    e = np.asarray(test_event, float)
    high = s > result.threshold
    fig, ax = plt.subplots(figsize=(6, 4.5))
    fitters = []
    for mask, label in ((~high, "low risk"), (high, "high risk")):
        kmf = KaplanMeierFitter(label=label).fit(t[mask], e[mask])
        kmf.plot_survival_function(ax=ax, ci_show=True)
        fitters.append(kmf)
    add_at_risk_counts(*fitters, ax=ax)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("survival probability")
    c = result.cox
    ax.set_title(
        f"{result.model}: log-rank p = {result.logrank.p_value:.3g}, "
        f"HR {c.hazard_ratio:.2f} ({c.hr_low:.2f}–{c.hr_high:.2f})",
        fontsize=9,
    )
    return save_figure(fig, stem)


def survival_table(results: list[SurvivalResult]) -> pd.DataFrame:
    """One row per model: threshold, group sizes, log-rank, hazard ratio with 95 % CI."""
    return pd.DataFrame(
        [
            {
                "model": r.model,
                "threshold": r.threshold,
                "threshold_rule": r.threshold_rule,
                "n_high": r.n_high,
                "n_low": r.n_low,
                "logrank_chi2": r.logrank.statistic,
                "logrank_p": r.logrank.p_value,
                "hazard_ratio": r.cox.hazard_ratio,
                "hr_low": r.cox.hr_low,
                "hr_high": r.cox.hr_high,
                "cox_p": r.cox.p_value,
            }
            for r in results
        ]
    )
