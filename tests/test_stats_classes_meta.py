"""Equivalence classes (letters), random-effects meta-analysis and t intervals over seeds/collections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankdistill.stats import CAVEAT, equivalence_classes, mean_interval, random_effects
from rankdistill.stats.equivalence import letter, letter_display


def test_letters():
    assert [letter(i) for i in (0, 1, 25, 26, 27, 51, 52)] == ["a", "b", "z", "aa", "ab", "az", "ba"]


def test_letter_display_non_transitive():
    # A~B and B~C but not A~C; means C > B > A: cliques {C,B} -> a, {B,A} -> b
    labels, classes = letter_display(["A", "B", "C"], {"A": 0.1, "B": 0.2, "C": 0.3},
                                     {frozenset("AB"), frozenset("BC")})
    assert labels == {"C": "a", "B": "ab", "A": "b"}
    assert classes == (("C", "B"), ("B", "A"))
    # nobody equivalent: one letter each, best first
    labels, _ = letter_display(["A", "B"], {"A": 0.1, "B": 0.2}, set())
    assert labels == {"B": "a", "A": "b"}


def test_equivalence_classes_from_tost():
    rng = np.random.default_rng(5)
    v = rng.uniform(0.2, 0.8, size=300)
    values = {"A": v, "B": v + 0.008 + rng.normal(0, 0.001, 300), "C": v + 0.016 + rng.normal(0, 0.001, 300)}
    ec = equivalence_classes(values, margin=0.01, alpha=0.05)
    assert ec.systems == ("C", "B", "A")
    assert ec.letters == {"C": "a", "B": "ab", "A": "b"}
    assert ec.pairwise[("A", "C")].verdict == "different"
    assert ec.pairwise[("A", "B")].verdict == "equivalent"
    assert ec.caveat == CAVEAT and "not transitive" in ec.caveat


def test_meta_dl_golden():
    # y = (0.1, 0.5, 0.2), v = (0.001, 0.002, 0.0015): w = (1000, 500, 666.667), sum 2166.667,
    # y_FE = 483.333 / 2166.667 = 0.223077; Q = sum w (y - y_FE)^2 = 15.148 + 38.343 + 0.355 = 53.846;
    # c = 2166.667 - (1e6 + 2.5e5 + 4.444e5)/2166.667 = 1384.615; tau2 = (53.846 - 2)/1384.615 = 0.037444;
    # w* = 1/(v + tau2) = (26.0116, 25.3521, 25.6776), sum 77.0413;
    # mu = (2.60116 + 12.67605 + 5.13552)/77.0413 = 0.264958, se = 1/sqrt(77.0413) = 0.113930;
    # I2 = (53.846 - 2)/53.846 = 0.96286.
    m = random_effects([0.1, 0.5, 0.2], [0.001, 0.002, 0.0015], ["a", "b", "c"], method="dl")
    assert m.tau2 == pytest.approx(0.037444, abs=1e-6)
    assert m.estimate == pytest.approx(0.264958, abs=1e-6)
    assert m.se == pytest.approx(0.113930, abs=1e-6)
    assert m.q == pytest.approx(53.846, abs=1e-3)
    assert m.i2 == pytest.approx(0.96286, abs=1e-5)
    assert m.ci_low == pytest.approx(0.264958 - 1.959964 * 0.113930, abs=1e-5)
    assert sum(m.weights) == pytest.approx(1.0)


def test_meta_tau2_truncated_at_zero():
    # y = (0.1, 0.3, 0.2), v = (0.01, 0.02, 0.015): Q = 1.385 < k - 1 = 2 -> tau2 = 0 and the estimate is the
    # fixed-effect mean (10 + 15 + 13.333) / 216.667 = 0.176923 (statsmodels' dl alone would give tau2 < 0)
    for method in ("dl", "pm"):
        m = random_effects([0.1, 0.3, 0.2], [0.01, 0.02, 0.015], method=method)
        assert m.tau2 == 0.0
        assert m.estimate == pytest.approx(0.176923, abs=1e-6)
        assert m.i2 == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        random_effects([0.1], [0.01])
    with pytest.raises(ValueError, match="> 0"):
        random_effects([0.1, 0.2], [0.01, 0.0])


def test_mean_interval_golden():
    # (1, 2, 3): mean 2, sd 1; t_{0.975, 2} = 0.95 sqrt(2 / (1 - 0.9025)) = 4.302653 -> 2 +- 4.302653/sqrt(3)
    m = mean_interval([1.0, 2.0, 3.0])
    assert (m.mean, m.sd, m.n) == (2.0, 1.0, 3)
    half = 0.95 * math.sqrt(2 / 0.0975) / math.sqrt(3)
    assert (m.low, m.high) == (pytest.approx(2 - half, rel=1e-9), pytest.approx(2 + half, rel=1e-9))
    one = mean_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low)


def test_meta_and_interval_inputs_are_checked():
    with pytest.raises(ValueError, match="1 labels for 2 effects"):
        random_effects([0.1, 0.2], [1e-3, 1e-3], labels=["a"])
    for call in (lambda: random_effects([0.1, 0.2], [1e-3, 1e-3], confidence=95),
                 lambda: mean_interval([0.3, 0.32, 0.31], 95)):
        with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), e.g. 0.95, got 95"):
            call()


def test_meta_analysis_weights_q_pvalue_and_paule_mandel_by_hand():
    """Found by mutation: only the estimate, se and I^2 were pinned, so fixed-effect weights in a random-effects
    result, a Q p-value on k degrees of freedom, or DerSimonian-Laird in place of Paule-Mandel all passed.
    The expected values are worked out here from the definitions, not from statsmodels."""
    from scipy.optimize import brentq

    y, v = np.array([0.1, 0.5, 0.2]), np.array([0.001, 0.002, 0.0015])
    w = 1 / v
    q = float(np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2))
    tau2_dl = max(0.0, (q - 2) / (w.sum() - np.sum(w**2) / w.sum()))
    dl = random_effects(y, v, method="dl")
    assert dl.q == pytest.approx(q) and dl.tau2 == pytest.approx(tau2_dl)
    assert dl.q_pvalue == pytest.approx(math.exp(-q / 2), rel=1e-9)  # chi^2 with 2 df: sf(q) = exp(-q/2)
    re = 1 / (v + tau2_dl)
    np.testing.assert_allclose(dl.weights, re / re.sum(), atol=1e-9)  # (0.337631, 0.329072, 0.333297)

    def generalised_q(t2: float) -> float:  # Paule-Mandel: the tau^2 at which the weighted Q equals k - 1
        wt = 1 / (v + t2)
        return float(np.sum(wt * (y - np.sum(wt * y) / wt.sum()) ** 2)) - 2

    tau2_pm = brentq(generalised_q, 0.0, 1.0, xtol=1e-14)
    pm = random_effects(y, v, method="pm")
    wt = 1 / (v + tau2_pm)
    assert pm.tau2 == pytest.approx(tau2_pm, abs=1e-6)  # 0.041681 (DL: 0.037444)
    assert pm.estimate == pytest.approx(np.sum(wt * y) / wt.sum(), abs=1e-6)  # 0.265126
    assert pm.se == pytest.approx(math.sqrt(1 / wt.sum()), abs=1e-6)


def test_an_inconclusive_pair_is_not_equivalent_in_the_letters():
    """Found by mutation: no test had an inconclusive pair, so letting one join a class passed."""
    rng = np.random.default_rng(5)
    v = rng.uniform(0.2, 0.8, 300)
    ec = equivalence_classes({"A": v, "B": v + 0.01 + rng.normal(0, 0.005, 300)}, 0.01, 0.05)
    assert ec.pairwise[("A", "B")].verdict == "inconclusive"
    assert ec.letters == {"B": "a", "A": "b"}
