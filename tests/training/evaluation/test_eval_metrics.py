"""Metrics, bootstrap CIs and permutation tests against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from mhub_fmcib_train.evaluation.metrics import (
    auc_roc,
    average_precision,
    balanced_accuracy,
    bootstrap_ci,
    comparison_table,
    mean_average_precision,
    paired_permutation_test,
)
from scipy import stats
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from mhub_fmcib.errors import ConfigError


def _binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = 1 / (1 + np.exp(-(1.2 * (y - 0.5) + rng.normal(0, 1, n))))
    b = 1 / (1 + np.exp(-(0.5 * (y - 0.5) + rng.normal(0, 1, n))))
    return y, np.round(a, 2), b  # rounding makes ties


def test_metrics_match_sklearn() -> None:
    y, a, _ = _binary(200, 1)
    assert auc_roc(y, a) == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert average_precision(y, a) == pytest.approx(average_precision_score(y, a), abs=1e-12)
    assert balanced_accuracy(y, a) == pytest.approx(balanced_accuracy_score(y, (a >= 0.5).astype(int)), abs=1e-12)
    rng = np.random.default_rng(2)
    y3 = rng.integers(0, 4, 150)
    p = rng.dirichlet(np.ones(4), 150) + 0.3 * np.eye(4)[y3]
    assert balanced_accuracy(y3, p) == pytest.approx(balanced_accuracy_score(y3, p.argmax(1)), abs=1e-12)
    expected_map = np.mean([average_precision_score(y3 == c, p[:, c]) for c in range(4)])
    assert mean_average_precision(y3, p) == pytest.approx(expected_map, abs=1e-12)
    assert average_precision_score(np.eye(4)[y3], p, average="macro") == pytest.approx(
        mean_average_precision(y3, p), abs=1e-12
    )


def test_bootstrap_equals_scipy_percentile() -> None:
    y, a, _ = _binary(120, 3)

    def stat(yy: np.ndarray, ss: np.ndarray) -> float:
        return auc_roc(yy, ss)

    ref = stats.bootstrap(
        (y, a), stat, paired=True, vectorized=False, n_resamples=9999, method="percentile", rng=np.random.default_rng(7)
    )
    ours = bootstrap_ci(y, a, "auc_roc", n_resamples=9999, seed=7)
    assert ours.n_undefined == 0
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=1e-12)
    assert ours.low < ours.estimate < ours.high


def test_permutation_matches_scipy_random_and_exact() -> None:
    y, a, b = _binary(60, 4)

    def stat(sa: np.ndarray, sb: np.ndarray, axis: int = -1) -> float:
        return auc_roc(y, sa) - auc_roc(y, sb)

    ref = stats.permutation_test(
        (a, b), stat, permutation_type="samples", vectorized=False, n_resamples=4000, rng=np.random.default_rng(0)
    )
    ours = paired_permutation_test(y, a, b, "auc_roc", n_permutations=4000, seed=1)
    assert ours.difference == pytest.approx(ref.statistic, abs=1e-12)
    assert not ours.exact
    se = np.sqrt(ref.pvalue * (1 - ref.pvalue) / 4000) * 2
    assert abs(ours.p_value - ref.pvalue) < 4 * se + 0.01
    # with 2**n <= n_permutations both enumerate every swap: identical p-values
    ys, as_, bs = y[:9], a[:9], b[:9]

    def stat9(sa: np.ndarray, sb: np.ndarray, axis: int = -1) -> float:
        return auc_roc(ys, sa) - auc_roc(ys, sb)

    ex = stats.permutation_test((as_, bs), stat9, permutation_type="samples", vectorized=False, n_resamples=1000)
    ours9 = paired_permutation_test(ys, as_, bs, "auc_roc", n_permutations=1000)
    assert ours9.exact
    assert ours9.n_permutations == 512
    assert ours9.p_value == pytest.approx(ex.pvalue, abs=1e-12)


def test_comparison_table_layout() -> None:
    y, a, b = _binary(80, 5)
    t = comparison_table(
        y,
        {"foundation": a, "supervised": b},
        ("auc_roc", "average_precision"),
        reference="foundation",
        n_resamples=200,
        n_permutations=200,
    )
    assert list(t.model) == ["foundation", "supervised"] * 2
    row = t[(t.model == "supervised") & (t.metric == "auc_roc")].iloc[0]
    assert row.estimate == pytest.approx(roc_auc_score(y, b))
    assert row.difference == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))
    assert 0 < row.p_value <= 1
    assert np.isnan(t[t.model == "foundation"].p_value).all()


def test_protocols_by_name_paper_default_and_authors_code() -> None:
    from mhub_fmcib_train.evaluation.metrics import STAT_PROTOCOLS, get_protocol

    paper, code = get_protocol("paper"), get_protocol("authors_code")
    assert (paper.n_resamples, paper.n_permutations, paper.alternative) == (9_999, 1_000, "two-sided")
    assert (code.n_resamples, code.n_permutations, code.alternative) == (1_000, 1_000, "greater_authors_code")
    assert set(STAT_PROTOCOLS) == {"paper", "authors_code"}
    with pytest.raises(ConfigError, match="authors_code"):
        get_protocol("nope")


def test_authors_code_p_value_is_one_sided_share_of_null_at_or_above_observed() -> None:
    from mhub_fmcib_train.evaluation.metrics import paired_permutation_test
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 60)
    a = y + rng.normal(0, 0.8, 60)
    b = y + rng.normal(0, 1.2, 60)
    got = paired_permutation_test(y, a, b, "auc_roc", 500, seed=3, alternative="greater_authors_code")
    # independent re-derivation: same swap masks, sklearn's AUC, p = mean(null >= observed)
    masks = np.random.default_rng(3).random((500, 60)) < 0.5
    obs = roc_auc_score(y, a) - roc_auc_score(y, b)
    null = np.array([roc_auc_score(y, np.where(m, b, a)) - roc_auc_score(y, np.where(m, a, b)) for m in masks])
    assert got.difference == pytest.approx(obs, abs=1e-12)
    assert got.p_value == pytest.approx(float(np.mean(null >= obs)), abs=1e-12)
    two = paired_permutation_test(y, a, b, "auc_roc", 500, seed=3)
    assert two.alternative == "two-sided" and got.alternative == "greater_authors_code"
    # reversed models: the one-sided p flips to the other tail, the two-sided one does not
    rev = paired_permutation_test(y, b, a, "auc_roc", 500, seed=3, alternative="greater_authors_code")
    assert rev.p_value > 0.5 > got.p_value
    assert paired_permutation_test(y, b, a, "auc_roc", 500, seed=3).p_value == pytest.approx(two.p_value)
