"""Verdicts on the paper's claims from families of paired comparisons, with the right error control.

A claim about *every* comparison of a family and a claim about *some* comparison need different tests:

- **"Elaborate sampling adds little"** says of every (strategy, loss, architecture, collection) that the gain over
  the baseline is below the margin delta. Each comparison is a one-sided non-superiority test,
  ``H0: mu >= delta`` against ``H1: mu < delta`` (the upper half of the TOST, ``p_upper``). The claim holds for
  the family when every one of them rejects at level alpha: an intersection-union test (Berger 1982), which needs
  no multiplicity correction. Failing to find a difference is *not* evidence for it: a comparison whose interval
  reaches delta leaves the claim undetermined there.
- **"Some strategy helps"**, **"high entropy hurts somewhere"** and **"some sampler makes the groups more
  compact"** are unions over the family: one-sided tests against zero (or against delta), adjusted across the
  family (Holm 1979 by default) so that about alpha * m false discoveries among m comparisons are not read as
  findings.

The one-sided p-values come from the paired t statistic of each comparison,
``t = (mean_diff - mu0) / se`` with ``df = n - 1`` degrees of freedom: ``P(T >= t)`` for ``H1: mu > mu0`` and
``P(T <= t)`` for ``H1: mu < mu0``. A comparison with constant differences (``se = 0``) gets p = 0 when its mean
lies on the side of the alternative, else 1.

References: R. L. Berger (1982), *Multiparameter hypothesis testing and acceptance sampling*, Technometrics
24(4); D. J. Schuirmann (1987), *A comparison of the two one-sided tests procedure*, J. Pharmacokinet.
Biopharm. 15(6); S. Holm (1979), *A simple sequentially rejective multiple test procedure*, Scand. J. Stat. 6(2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import stats

from rankdistill.stats.corrections import adjust_pvalues


class Estimate(Protocol):
    """A paired mean difference with its standard error, degrees of freedom and (1 - 2 alpha) interval
    (:class:`~rankdistill.stats.tost.TostResult` and :class:`PairedShift` are ones)."""

    mean_diff: float
    se: float
    df: int
    ci_low: float
    ci_high: float


def one_sided_p(mean_diff: float, se: float, df: int, mu0: float, alternative: str) -> float:
    """p-value of the paired t-test of ``H1: mu > mu0`` (``alternative="greater"``) or ``mu < mu0``
    (``"less"``) from the mean difference, its standard error and degrees of freedom."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if se == 0 or df < 1:
        above = mean_diff > mu0 if alternative == "greater" else mean_diff < mu0
        return 0.0 if above else 1.0
    t = (mean_diff - mu0) / se
    return float(stats.t.sf(t, df) if alternative == "greater" else stats.t.cdf(t, df))


@dataclass(frozen=True)
class Finding:
    """One comparison of a family: its label, mean difference, (1 - 2 alpha) interval and the p-value of the
    one-sided test that the claim's union reads, adjusted across the family."""

    label: str
    mean_diff: float
    ci_low: float
    ci_high: float
    p_adjusted: float

    def describe(self) -> str:
        return f"{self.label}: {self.mean_diff:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}]"


def _findings(comparisons: Sequence[tuple[str, Estimate]], mu0: float, alternative: str,
              correction: str) -> list[Finding]:
    ps = [one_sided_p(t.mean_diff, t.se, t.df, mu0, alternative) for _, t in comparisons]
    adj = adjust_pvalues(ps, correction)
    return [Finding(label, t.mean_diff, t.ci_low, t.ci_high, float(p)) for (label, t), p in zip(comparisons, adj)]


@dataclass(frozen=True)
class AddsLittle:
    """The family-wide verdict on "the alternatives add less than the margin over the baseline".

    ``verdict``: ``supported`` when every comparison's non-superiority test rejects (intersection-union test);
    ``contradicted`` when some comparison is better than the baseline by more than the margin (one-sided test
    against +delta, adjusted across the family); otherwise ``undetermined``.
    """

    n: int
    margin: float
    alpha: float
    correction: str
    shown_little: tuple[str, ...]
    undetermined: tuple[Finding, ...]
    better: tuple[Finding, ...]
    beyond_margin: tuple[Finding, ...]
    worse: tuple[Finding, ...]
    verdict: str


def adds_little(comparisons: Sequence[tuple[str, Estimate]], margin: float, alpha: float,
                correction: str = "holm") -> AddsLittle:
    """Judge "adds little" over ``comparisons`` (label, TOST of alternative minus baseline): per comparison the
    non-superiority test ``H0: mu >= margin`` at ``alpha`` (its ``p_upper``); across the family the unions
    "better than the baseline" (``mu > 0``), "better by more than the margin" (``mu > margin``) and "worse"
    (``mu < 0``), adjusted with ``correction``."""
    shown = tuple(label for label, t in comparisons
                  if one_sided_p(t.mean_diff, t.se, t.df, margin, "less") < alpha)
    better = tuple(f for f in _findings(comparisons, 0.0, "greater", correction) if f.p_adjusted < alpha)
    beyond = tuple(f for f in _findings(comparisons, margin, "greater", correction) if f.p_adjusted < alpha)
    worse = tuple(f for f in _findings(comparisons, 0.0, "less", correction) if f.p_adjusted < alpha)
    undetermined = tuple(Finding(label, t.mean_diff, t.ci_low, t.ci_high, math.nan) for label, t in comparisons
                         if label not in shown)
    n = len(comparisons)
    verdict = ("supported" if n and len(shown) == n else "contradicted" if beyond else "undetermined")
    return AddsLittle(n, margin, alpha, correction, shown, undetermined, better, beyond, worse, verdict)


@dataclass(frozen=True)
class Differences:
    """How often a family's alternatives differ from the baseline: the two-sided paired t-test
    (``p = 2 min(P(T >= t), P(T <= t))``) adjusted across the family, split by the sign of the difference, and the
    mean absolute difference."""

    n: int
    higher: tuple[Finding, ...]
    lower: tuple[Finding, ...]
    mean_abs_diff: float


def differences(comparisons: Sequence[tuple[str, Estimate]], alpha: float, correction: str = "holm"
                ) -> Differences:
    """Two-sided differences from the baseline across a family, adjusted with ``correction``."""
    ps = [min(1.0, 2 * min(one_sided_p(t.mean_diff, t.se, t.df, 0.0, "greater"),
                           one_sided_p(t.mean_diff, t.se, t.df, 0.0, "less"))) for _, t in comparisons]
    found = [Finding(label, t.mean_diff, t.ci_low, t.ci_high, float(p))
             for (label, t), p in zip(comparisons, adjust_pvalues(ps, correction)) if p < alpha]
    mad = float(np.mean([abs(t.mean_diff) for _, t in comparisons])) if comparisons else math.nan
    return Differences(len(comparisons), tuple(f for f in found if f.mean_diff > 0),
                       tuple(f for f in found if f.mean_diff < 0), mad)


def significant(comparisons: Sequence[tuple[str, Estimate]], alternative: str, alpha: float,
                correction: str = "holm", mu0: float = 0.0) -> tuple[Finding, ...]:
    """The comparisons whose one-sided test of ``mu > mu0`` or ``mu < mu0`` rejects at ``alpha`` after
    adjusting across the family."""
    return tuple(f for f in _findings(comparisons, mu0, alternative, correction) if f.p_adjusted < alpha)


@dataclass(frozen=True)
class PairedShift:
    """A per-query statistic of one system minus the baseline's, over the queries both have: mean difference
    with its (1 - 2 alpha) t interval, median difference, and the share of queries where it is smaller."""

    label: str
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    median_diff: float
    share_smaller: float
    se: float
    df: int


def contrast(label: str, values: Mapping[str, Mapping[str, float]], weights: Mapping[str, float], alpha: float
             ) -> PairedShift | None:
    """The per-query contrast ``c_q = sum_s w_s v_s(q)`` of systems ``s`` (each ``{query_id: value}``) over the
    queries where every weighted system has a finite value: its mean with the paired t interval at level
    ``1 - 2 alpha``, median, and the share of queries where it is negative. ``None`` when fewer than two queries
    remain. E.g. weights ``{a: 1, b: -1}`` give the paired difference ``a - b``; ``{q2: .5, q3: .5, q1: -.5,
    q4: -.5}`` the middle bands against the outer ones."""
    names = [s for s, w in weights.items() if w != 0]
    common = set.intersection(*(set(values[s]) for s in names)) if names else set()
    qids = sorted(q for q in common if all(math.isfinite(values[s][q]) for s in names))
    if len(qids) < 2:
        return None
    d = np.array([sum(weights[s] * values[s][q] for s in names) for q in qids], dtype=np.float64)
    n, mean = d.size, float(np.mean(d))
    se = float(np.std(d, ddof=1) / math.sqrt(n))
    if se == 0:
        lo = hi = mean
    else:
        lo, hi = (float(x) for x in stats.t.interval(1 - 2 * alpha, n - 1, loc=mean, scale=se))
    return PairedShift(label, n, mean, lo, hi, float(np.median(d)), float(np.mean(d < 0)), se, n - 1)


def paired_shift(label: str, values: Mapping[str, float], baseline: Mapping[str, float], alpha: float
                 ) -> PairedShift | None:
    """``values`` minus ``baseline`` (both keyed by query id) on their common, finite queries: the
    :func:`contrast` with weights +1 and -1."""
    return contrast(label, {"x": values, "base": baseline}, {"x": 1.0, "base": -1.0}, alpha)


__all__ = ["AddsLittle", "Differences", "Estimate", "Finding", "PairedShift", "adds_little", "contrast",
           "differences", "one_sided_p", "paired_shift", "significant"]
