"""Paired TOST: golden values, parity with statsmodels' ttost_paired, verdict properties, margins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.weightstats import ttost_paired

from rankdistill.errors import UserInputError
from rankdistill.stats import paired_tost, resolve_margin, tost_verdict


def _t2_cdf(t: float) -> float:
    """Student t CDF with 2 degrees of freedom in closed form: 1/2 + t / (2 sqrt(2 + t^2))."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def test_tost_golden():
    # d = (1, 2, 3): mean 2, se = 1/sqrt(3) = 0.577350, df 2; margin 4, alpha 0.05.
    # t_L = (2 + 4)/se = 6 sqrt(3) = 10.392305, p_L = 1 - F(10.392305) = 1 - (1/2 + 10.392305/(2 sqrt 110))
    #     = 0.004567;
    # t_U = (2 - 4)/se = -2 sqrt(3), p_U = F(-3.464102) = 0.037090; p_TOST = 0.037090 < 0.05: equivalent.
    # 90% interval: t_{0.95, 2} = 0.9 sqrt(2 / (1 - 0.81)) = 2.919986 -> 2 +- 2.919986 * 0.577350
    #     = (0.314146, 3.685854).
    y = np.array([0.5, 0.6, 0.7])
    r = paired_tost(y + np.array([1.0, 2.0, 3.0]), y, margin=4.0, alpha=0.05)
    assert r.t_lower == pytest.approx(6 * math.sqrt(3), rel=1e-9)
    assert r.t_upper == pytest.approx(-2 * math.sqrt(3), rel=1e-9)
    assert r.p_lower == pytest.approx(1 - _t2_cdf(6 * math.sqrt(3)), rel=1e-9)
    assert r.p_upper == pytest.approx(_t2_cdf(-2 * math.sqrt(3)), rel=1e-9)
    assert r.p_tost == pytest.approx(0.037090, abs=1e-6)
    t_crit = 0.9 * math.sqrt(2 / 0.19)
    assert t_crit == pytest.approx(2.919986, abs=1e-6)
    assert r.ci_low == pytest.approx(2 - t_crit / math.sqrt(3), rel=1e-9)
    assert r.ci_high == pytest.approx(2 + t_crit / math.sqrt(3), rel=1e-9)
    assert (r.verdict, r.ci_level, r.df) == ("equivalent", pytest.approx(0.9), 2)
    # the same data with margin 3.5: 3.686 > 3.5 -> inconclusive; margin 0.3: 0.314 > 0.3 -> different
    assert paired_tost(y + np.array([1.0, 2.0, 3.0]), y, margin=3.5).verdict == "inconclusive"
    assert paired_tost(y + np.array([1.0, 2.0, 3.0]), y, margin=0.3).verdict == "different"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tost_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 300))
    y = rng.uniform(0, 1, size=n)
    x = y + rng.normal(rng.uniform(-0.03, 0.03), 0.08, size=n)
    margin = float(rng.uniform(0.005, 0.05))
    r = paired_tost(x, y, margin, alpha=0.05)
    p, (t1, pv1, df1), (t2, pv2, df2) = ttost_paired(x, y, -margin, margin)
    assert r.p_tost == pytest.approx(p, rel=1e-9)
    assert r.p_lower == pytest.approx(pv1, rel=1e-9) and r.t_lower == pytest.approx(t1, rel=1e-9)
    assert r.p_upper == pytest.approx(pv2, rel=1e-9) and r.t_upper == pytest.approx(t2, rel=1e-9)
    assert r.df == df1 == df2


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(-0.05, 0.05), st.floats(0.002, 0.05), st.sampled_from([0.05, 0.1]))
def test_verdict_follows_interval(seed, shift, margin, alpha):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, size=40)
    x = y + shift + rng.normal(0, 0.03, size=40)
    r = paired_tost(x, y, margin, alpha)
    inside = -margin < r.ci_low and r.ci_high < margin
    outside = r.ci_high < -margin or r.ci_low > margin
    assert r.verdict == ("equivalent" if inside else "different" if outside else "inconclusive")
    # duality: equivalent exactly when both one-sided tests reject
    assert (r.verdict == "equivalent") == (r.p_tost < alpha)
    assert r.ci_low <= r.mean_diff <= r.ci_high


def test_verdict_flips_when_interval_crosses_margin():
    rng = np.random.default_rng(11)
    y = rng.uniform(0, 1, size=100)
    noise = rng.normal(0, 0.02, size=100)
    noise -= noise.mean()
    base = paired_tost(y + noise, y, margin=0.01)
    half = (base.ci_high - base.ci_low) / 2  # the interval half-width does not change with a shift
    just_inside = paired_tost(y + noise + (0.01 - half - 1e-4), y, margin=0.01)
    just_across = paired_tost(y + noise + (0.01 - half + 1e-4), y, margin=0.01)
    beyond = paired_tost(y + noise + (0.01 + half + 1e-4), y, margin=0.01)
    assert [just_inside.verdict, just_across.verdict, beyond.verdict] == ["equivalent", "inconclusive", "different"]


def test_tost_zero_variance_and_bad_margin():
    y = np.array([0.2, 0.3, 0.4])
    assert paired_tost(y + 0.005, y, 0.01).verdict == "equivalent"
    assert paired_tost(y + 0.02, y, 0.01).verdict == "different"
    with pytest.raises(ValueError, match="margin"):
        paired_tost(y, y + 0.1, 0.0)
    assert tost_verdict(-0.01, 0.005, 0.01) == "inconclusive"  # touching the margin is not inside


def test_constant_difference_on_the_margin_is_on_it_up_to_rounding():
    # 0.3 + 0.01 - 0.3 is 0.010000000000000009: a constant difference of the margin itself, not one past it
    y = np.array([0.3, 0.5, 0.7])
    assert float(np.mean((y + 0.01) - y)) > 0.01
    for sign in (1, -1):
        r = paired_tost(y + sign * 0.01, y, 0.01, 0.1)
        assert (r.verdict, r.p_tost) == ("inconclusive", 1.0)
        assert r.mean_diff == pytest.approx(sign * 0.01)
    assert paired_tost(y + 0.0100001, y, 0.01).verdict == "different"  # past it by more than rounding


def test_margins():
    assert resolve_margin(0.01).value == 0.01
    m = resolve_margin(margin_rel=0.02, baseline_mean=0.5)
    assert (m.value, m.kind) == (pytest.approx(0.01), "relative")
    for kw in ({"margin": 0.0}, {"margin": -0.01}, {"margin_rel": -1.0, "baseline_mean": 0.4}, {},
               {"margin": 0.01, "margin_rel": 0.02}, {"margin_rel": 0.02, "baseline_mean": 0.0}):
        with pytest.raises(UserInputError):
            resolve_margin(**kw)


def test_a_constant_difference_below_the_margin_gives_both_statistics_minus_infinity():
    """Found by mutation: the lower statistic of a constant difference was only checked above the margin.
    d = -0.02 everywhere, margin 0.01: (d + 0.01) / 0 = -inf and (d - 0.01) / 0 = -inf, so "different"."""
    y = np.array([0.2, 0.3, 0.4])
    r = paired_tost(y - 0.02, y, 0.01)
    assert (r.t_lower, r.t_upper) == (-math.inf, -math.inf)
    assert r.verdict == "different"
