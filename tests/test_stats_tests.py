"""Paired t / Wilcoxon tests, multiple-testing corrections and the bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rankdistill.errors import UserInputError
from rankdistill.stats import adjust_pvalues, bootstrap_mean_diff, paired_t_test, wilcoxon_test


def test_paired_t_golden():
    # d = x - y = (1, 2, 3): mean 2, sd 1, se = 1/sqrt(3), t = 2 sqrt(3) = 3.464102, df = 2.
    # For df = 2 the t CDF is F(t) = 1/2 + t / (2 sqrt(2 + t^2)); t^2 = 12 -> F = 1/2 + 3.464102/7.483315
    # = 0.962910, so the two-sided p = 2 (1 - F) = 0.074180.
    y = np.array([0.2, 0.5, 0.1])
    res = paired_t_test(y + np.array([1.0, 2.0, 3.0]), y)
    assert res.statistic == pytest.approx(2 * math.sqrt(3), rel=1e-9)
    assert res.pvalue == pytest.approx(2 * (0.5 - 2 * math.sqrt(3) / (2 * math.sqrt(14))), rel=1e-9)
    assert res.pvalue == pytest.approx(0.074180, abs=1e-6)
    assert (res.n, res.mean_diff) == (3, pytest.approx(2.0))


def test_paired_t_degenerate_differences():
    x = np.array([0.3, 0.4, 0.5])
    assert paired_t_test(x, x).pvalue == 1.0
    assert paired_t_test(x + 0.1, x).pvalue == 0.0
    # the same values computed another way differ by rounding only: no evidence, not p = 0
    y = np.random.default_rng(0).uniform(0.2, 0.9, 50)
    same = y * 10 / 10
    assert 0 < np.abs(same - y).max() < 1e-15 and np.mean(same - y) != 0
    assert paired_t_test(same, y).pvalue == 1.0 and wilcoxon_test(same, y).pvalue == 1.0
    # the rounding scales with the values (e.g. costs in seconds, not nDCG): still no evidence
    big = y * 1e6
    same_big = big * 10 / 10
    assert 1e-12 < abs(np.mean(same_big - big)) and paired_t_test(same_big, big).pvalue == 1.0
    assert wilcoxon_test(same_big, big).pvalue == 1.0


def test_wilcoxon_golden():
    # d = (1, 2, 3, -0.5): ranks of |d| are 2, 3, 4, 1; W+ = 9, W- = 1; statistic = min = 1.
    # Exact null: 16 sign patterns equally likely; W- <= 1 in 2 of them (none negative, or only rank 1),
    # so the one-sided p is 2/16 and the two-sided p = 0.25.
    y = np.zeros(4)
    res = wilcoxon_test(y + np.array([1.0, 2.0, 3.0, -0.5]), y)
    assert res.statistic == 1.0
    assert res.pvalue == pytest.approx(0.25, abs=1e-12)
    assert wilcoxon_test(y, y).pvalue == 1.0


def test_paired_input_validation():
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        paired_t_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        wilcoxon_test([1, math.nan, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        paired_t_test([1.0], [0.0])
    # pandas Series pair by query id, not by position; different query sets are refused
    pd = pytest.importorskip("pandas")
    x = pd.Series([0.5, 0.6, 0.7, 0.4], index=["q1", "q2", "q3", "q4"])
    y = pd.Series([0.45, 0.62, 0.66, 0.41], index=["q1", "q2", "q3", "q4"])
    assert paired_t_test(x, y[::-1]) == paired_t_test(x.to_numpy(), y.to_numpy())
    with pytest.raises(ValueError, match="the same index"):
        paired_t_test(x, y.rename(index={"q4": "q9"}))
    # so do mappings, as evaluate_run's per-query values come (a TypeError from float() of a dict)
    from rankdistill.stats.tost import paired_tost

    assert paired_t_test(x.to_dict(), dict(reversed(y.to_dict().items()))) == paired_t_test(x, y)
    assert paired_tost(x.to_dict(), y.to_dict(), 0.1) == paired_tost(x.to_numpy(), y.to_numpy(), 0.1)
    with pytest.raises(ValueError, match=r"need the same keys \(query ids\); 2 are in one only, e.g. q4, q9"):
        paired_t_test(x.to_dict(), y.rename(index={"q4": "q9"}).to_dict())
    with pytest.raises(ValueError, match="n_resamples must be >= 1"):
        bootstrap_mean_diff(x.to_numpy(), y.to_numpy(), n_resamples=0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), e.g. 0.95, got 95"):
        bootstrap_mean_diff(x.to_numpy(), y.to_numpy(), confidence=95)


def test_corrections_golden():
    # p = (0.01, 0.04, 0.03), m = 3.
    # Holm: sorted (0.01, 0.03, 0.04) x (3, 2, 1) = (0.03, 0.06, 0.04), running max -> (0.03, 0.06, 0.06);
    # back in the given order: (0.03, 0.06, 0.06).
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04, 0.03], "holm"), [0.03, 0.06, 0.06], atol=1e-12)
    # BH: sorted p * m / rank = (0.03, 0.045, 0.04), running min from the top -> (0.03, 0.04, 0.04);
    # given order: 0.01 -> 0.03, 0.04 -> 0.04, 0.03 -> 0.04.
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04, 0.03], "bh"), [0.03, 0.04, 0.04], atol=1e-12)
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04], "none"), [0.01, 0.04])
    # what is not one family of p-values is refused (a negative p came out "adjusted", NaN spread under BH)
    for bad, message in [([-0.2, 0.5], r"in \[0, 1\]; got -0.2"), ([0.01, math.nan], "in \\[0, 1\\]; got nan"),
                         ([0.01, 1.7], "got 1.7"), ([[0.01, 0.02], [0.03, 0.04]], r"one flat sequence")]:
        with pytest.raises(ValueError, match=message):
            adjust_pvalues(bad, "bh")
    with pytest.raises(UserInputError, match="unknown correction"):
        adjust_pvalues([0.1], "bonferonni")


def test_holm_agrees_with_statsmodels():
    """Holm is computed in numpy (statsmodels' Holm runs a full gc.collect() per call); it must give the same
    values as statsmodels' on families with ties, values adjusted past 1, and single tests."""
    from statsmodels.stats.multitest import multipletests

    # two calls only: each of statsmodels' runs that collection (seconds in a full test process)
    rng = np.random.default_rng(7)
    for p in (np.concatenate([rng.uniform(0, 1, size=30) ** 3, [0.02, 0.02, 0.5, 0.02]]), np.array([0.3])):
        np.testing.assert_allclose(adjust_pvalues(p, "holm"), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    assert adjust_pvalues([0.4, 0.6, 0.5], "holm").tolist() == [1.0, 1.0, 1.0]  # 0.4 x 3 = 1.2, clipped
    assert adjust_pvalues([0.0, 0.0], "holm").tolist() == [0.0, 0.0]


def test_bootstrap_deterministic_and_sensible():
    rng = np.random.default_rng(3)
    y = rng.uniform(0.2, 0.8, size=150)
    x = y + rng.normal(0.02, 0.05, size=150)
    a = bootstrap_mean_diff(x, y, n_resamples=2000, seed=7)
    b = bootstrap_mean_diff(x, y, n_resamples=2000, seed=7)
    c = bootstrap_mean_diff(x, y, n_resamples=2000, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < a.mean_diff < a.high
    # for a sample this large, the bootstrap interval is close to the Student t interval of the mean
    d = x - y
    lo, hi = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(d.size))
    assert a.low == pytest.approx(lo, abs=0.003)
    assert a.high == pytest.approx(hi, abs=0.003)
    p = bootstrap_mean_diff(x, y, n_resamples=2000, seed=7, method="percentile")
    assert p.low == pytest.approx(lo, abs=0.003) and p.method == "percentile"


def test_bootstrap_constant_differences():
    y = np.array([0.1, 0.5, 0.9])
    r = bootstrap_mean_diff(y + 0.25, y, n_resamples=100)
    assert (r.low, r.high) == (pytest.approx(0.25), pytest.approx(0.25))


def test_identical_systems_are_notes_in_a_study_and_errors_for_a_user():
    """A study's own cells may rank alike (their difference is exactly 0 and the tests say so); two identical
    files given by a user are a mistake."""
    import numpy as np

    from rankdistill.errors import UserInputError
    from rankdistill.stats.compare import ComparisonConfig, check_degenerate, compare_systems
    from rankdistill.stats.perquery import Alignment

    m = np.array([[0.1, 0.5, 0.9, 0.3], [0.1, 0.5, 0.9, 0.3], [0.2, 0.4, 0.8, 0.6]])
    al = Alignment(("a", "b", "c"), ("q1", "q2", "q3", "q4"), m, {}, "drop")
    with pytest.raises(UserInputError, match="identical values on every query"):
        check_degenerate(al)
    assert check_degenerate(al, strict=False) == ["systems a and b have identical values on every query"]
    config = ComparisonConfig(metric="nDCG@10", baseline="a", margin=0.01, alpha=0.05, bootstrap=100)
    report = compare_systems(al, config)
    row = next(r for r in report.rows if r.name == "b")
    assert row.mean_diff == 0.0 and row.tost.verdict == "equivalent"


def test_comparison_config_is_validated_on_construction():
    from rankdistill.stats.compare import ComparisonConfig

    with pytest.raises(UserInputError, match="unknown bootstrap method 'bca'; known: BCa, percentile"):
        ComparisonConfig(metric="nDCG@10", margin=0.01, bootstrap_method="bca")
    # one test named bare is that test, not its letters
    assert ComparisonConfig(metric="nDCG@10", margin=0.01, tests="wilcoxon").tests == ("wilcoxon",)


def test_zero_differences_infinite_statistics_defaults_and_the_bootstrap_method():
    """Found by mutation: the golden data had no zero difference (Wilcoxon's zero_method), no constant
    difference below zero or on the rounding tolerance, no call with the default correction, and the
    bootstrap's tolerance was wider than the change from BCa to percentile or to a 97.5% interval."""
    # Wilcoxon drops the zero ("wilcox"): |d| ranks 0.5 -> 1, 1 -> 2, 2 -> 3, 3 -> 4; W- = 1; exact p = 2 * 2/16
    r = wilcoxon_test(np.array([1.0, 2, 3, -0.5, 0]), np.zeros(5))
    assert (r.statistic, r.pvalue) == (1.0, 0.25)  # "pratt" ranks the zero too: statistic 2
    y = np.array([0.2, 0.5, 0.1])
    worse = paired_t_test(y - 0.1, y)
    assert worse.statistic == -math.inf and worse.pvalue == 0.0  # a constant shift down keeps its sign
    assert paired_t_test(y + 1e-9, y).pvalue == 0.0  # 1e-9 is a real constant shift, not float rounding
    # the default correction is Holm: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 0.04)
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    rng = np.random.default_rng(3)
    b = rng.uniform(0.2, 0.8, 150)
    a = b + rng.normal(0.02, 0.05, 150)
    ci = bootstrap_mean_diff(a, b, n_resamples=2000, seed=7)  # defaults: BCa, 95%
    ref = stats.bootstrap((a - b,), np.mean, n_resamples=2000, confidence_level=0.95, method="BCa",
                          rng=np.random.default_rng(7), vectorized=True).confidence_interval
    assert ci.method == "BCa" and ci.confidence == 0.95
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert (ci.low, ci.high) == pytest.approx((0.0190045, 0.0339057), abs=1e-6)  # percentile: 0.01898, 0.03370
