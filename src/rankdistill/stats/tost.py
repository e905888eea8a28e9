"""Paired TOST equivalence test with a margin fixed in advance.

Schuirmann's two one-sided tests (Schuirmann 1987; Lakens 2017) on the per-query differences
``d_q = x_q - y_q`` (system minus baseline), ``n`` queries, ``se = sd(d) / sqrt(n)``, ``n - 1`` degrees of
freedom, and an equivalence margin ``delta > 0`` chosen *before* looking at the results:

- lower test: ``H0: mean(d) <= -delta`` vs ``H1: mean(d) > -delta``, ``t_L = (mean(d) + delta) / se``;
- upper test: ``H0: mean(d) >= +delta`` vs ``H1: mean(d) < +delta``, ``t_U = (mean(d) - delta) / se``;
- ``p_TOST = max(p_L, p_U)``; equivalence is shown at level ``alpha`` when ``p_TOST < alpha``, which is the
  same as the ``(1 - 2 alpha)`` confidence interval ``mean(d) +- t_{1-alpha, n-1} se`` lying inside
  ``(-delta, +delta)``.

Verdicts (three, never "both p-values above alpha means equivalent", the paper's mistake):

- ``equivalent``: the ``(1 - 2 alpha)`` interval lies inside ``(-delta, delta)`` (``p_TOST < alpha``);
- ``different``: the interval lies entirely outside ``[-delta, delta]``: the difference is larger than the
  margin at level ``alpha`` (a minimum-effect test);
- ``inconclusive``: the interval overlaps a margin: the data cannot tell.

The margin is absolute (``--margin 0.01``: 0.01 nDCG@10) or relative to the *baseline* mean
(``--margin-rel 0.02``: 2 % of the baseline's mean), never derived from the observed difference (the
paper's other mistake). The one-sided tests are :func:`scipy.stats.ttest_1samp`; the tests check them
against :func:`statsmodels.stats.weightstats.ttost_paired`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from rankdistill.errors import UserInputError
from rankdistill.stats.paired import is_constant, is_zero, paired_arrays

VERDICTS: tuple[str, ...] = ("equivalent", "different", "inconclusive")


@dataclass(frozen=True)
class Margin:
    """An equivalence margin: its absolute value and how it was specified (``absolute`` or ``relative``)."""

    value: float
    kind: str
    spec: float

    def describe(self) -> str:
        if self.kind == "relative":
            return f"{self.value:.6g} ({self.spec:g} x baseline mean)"
        return f"{self.value:.6g} (absolute)"


def resolve_margin(margin: float | None = None, margin_rel: float | None = None,
                   baseline_mean: float | None = None) -> Margin:
    """The absolute margin from exactly one of ``margin`` (absolute) or ``margin_rel`` x baseline mean."""
    if (margin is None) == (margin_rel is None):
        raise UserInputError("give exactly one equivalence margin", fix="use --margin 0.01 or --margin-rel 0.02")
    if margin is not None:
        if not (math.isfinite(margin) and margin > 0):
            raise UserInputError(f"the margin must be a finite number > 0, got {margin}",
                                 fix="fix it in advance, e.g. --margin 0.01 (absolute, in metric units)")
        return Margin(float(margin), "absolute", float(margin))
    assert margin_rel is not None
    if not (math.isfinite(margin_rel) and margin_rel > 0):
        raise UserInputError(f"the relative margin must be a finite number > 0, got {margin_rel}",
                             fix="e.g. --margin-rel 0.02 for 2% of the baseline mean")
    if baseline_mean is None or not (math.isfinite(baseline_mean) and baseline_mean > 0):
        raise UserInputError(f"a relative margin needs a positive baseline mean, got {baseline_mean}",
                             fix="use an absolute --margin")
    return Margin(float(margin_rel * baseline_mean), "relative", float(margin_rel))


@dataclass(frozen=True)
class TostResult:
    """Outcome of a paired TOST: both one-sided tests, the (1 - 2 alpha) interval and the verdict."""

    n: int
    mean_diff: float
    se: float
    df: int
    margin: float
    alpha: float
    t_lower: float
    p_lower: float
    t_upper: float
    p_upper: float
    ci_low: float
    ci_high: float
    verdict: str

    @property
    def p_tost(self) -> float:
        """``max(p_lower, p_upper)``: the p-value of the equivalence test."""
        return max(self.p_lower, self.p_upper)

    @property
    def ci_level(self) -> float:
        """The confidence level of the reported interval, ``1 - 2 alpha``."""
        return 1.0 - 2.0 * self.alpha


def tost_verdict(ci_low: float, ci_high: float, margin: float) -> str:
    """``equivalent`` if ``-delta < low, high < delta``; ``different`` if the interval misses
    ``[-delta, delta]``; otherwise ``inconclusive``."""
    if -margin < ci_low and ci_high < margin:
        return "equivalent"
    if ci_high < -margin or ci_low > margin:
        return "different"
    return "inconclusive"


def paired_tost(x: ArrayLike, y: ArrayLike, margin: float, alpha: float = 0.05) -> TostResult:
    """Paired TOST of ``|mean(x - y)| < margin`` at level ``alpha`` (see the module docstring)."""
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"the margin must be > 0, got {margin}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    a, b = paired_arrays(x, y)
    d = a - b
    n = d.size
    mean = float(np.mean(d))
    if is_constant(a, b):  # zero variance: the interval is the point itself
        # a point on a bound up to float rounding is on it (0.31 - 0.30 is 0.010000000000000009, not past 0.01)
        m = math.copysign(margin, mean) if is_zero(abs(mean) - margin, a, b) else mean
        p_lower = 0.0 if m > -margin else 1.0
        p_upper = 0.0 if m < margin else 1.0
        t_lower = math.inf if m > -margin else -math.inf
        t_upper = -math.inf if m < margin else math.inf
        return TostResult(n, mean, 0.0, n - 1, margin, alpha, t_lower, p_lower, t_upper, p_upper, mean, mean,
                          tost_verdict(m, m, margin))
    lower = stats.ttest_1samp(d, popmean=-margin, alternative="greater")
    upper = stats.ttest_1samp(d, popmean=margin, alternative="less")
    ci = stats.ttest_1samp(d, popmean=0.0).confidence_interval(confidence_level=1.0 - 2.0 * alpha)
    se = float(np.std(d, ddof=1) / math.sqrt(n))
    return TostResult(n, mean, se, n - 1, margin, alpha, float(lower.statistic), float(lower.pvalue),
                      float(upper.statistic), float(upper.pvalue), float(ci.low), float(ci.high),
                      tost_verdict(float(ci.low), float(ci.high), margin))


__all__ = ["VERDICTS", "Margin", "TostResult", "paired_tost", "resolve_margin", "tost_verdict"]
