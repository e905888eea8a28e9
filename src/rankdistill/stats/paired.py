"""Paired significance tests on per-query metric values (system vs baseline).

Both tests take the two systems' values on the *same* queries in the same order, and test the per-query
differences ``d_q = x_q - y_q`` (system minus baseline):

- paired t-test (Student 1908): ``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of freedom,
  two-sided, via :func:`scipy.stats.ttest_rel`;
- Wilcoxon signed-rank test (Wilcoxon 1945): ranks of ``|d_q|`` signed by ``d_q``, zero differences dropped
  (``zero_method="wilcox"``), two-sided, via :func:`scipy.stats.wilcoxon` (exact for small n without ties,
  normal approximation otherwise).

Smucker, Allan & Carterette (2007) compare these tests for IR evaluation; paired tests are the right ones
for per-query scores (the paper's unpaired test ignored the pairing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from rankdistill.errors import UserInputError


@dataclass(frozen=True)
class PairedTestResult:
    """One paired test: its name, statistic, two-sided p-value, number of pairs and mean difference."""

    test: str
    statistic: float
    pvalue: float
    n: int
    mean_diff: float


def check_confidence(confidence: float) -> None:
    """Raise :class:`UserInputError` (a ``ValueError``) unless ``confidence`` is a level in (0, 1) (0.95, not
    95)."""
    if not 0.0 < confidence < 1.0:
        raise UserInputError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}")


def paired_arrays(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate two aligned 1-d float vectors of equal length >= 2 without NaN.

    Two pandas Series are paired by their index, and two mappings (``{query_id: value}``, as
    :func:`~rankdistill.evaluation.evaluate_run` gives per query) by their keys: the same queries in any order,
    not by position."""
    if hasattr(x, "reindex") and hasattr(y, "reindex"):  # pandas: pair by query, as the index says
        if set(x.index) != set(y.index) or x.index.has_duplicates:  # type: ignore[union-attr]
            raise ValueError("paired samples given as pandas Series need the same index (query ids) without "
                             "repeats")
        y = y.reindex(x.index)  # type: ignore[union-attr]
    elif isinstance(x, Mapping) and isinstance(y, Mapping):
        if x.keys() != y.keys():
            only = sorted(set(x).symmetric_difference(y), key=str)
            raise ValueError(f"paired samples given as mappings need the same keys (query ids); "
                             f"{len(only)} are in one only, e.g. {', '.join(map(str, only[:3]))}")
        x, y = list(x.values()), [y[k] for k in x]
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired samples need equal 1-d shapes, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired samples contain NaN or infinite values")
    return a, b


def _rounding(a: np.ndarray, b: np.ndarray) -> float:
    """Float rounding at the values' scale: ``1e-12 max(1, max |a|, max |b|, max |a - b|)`` (the same scores
    computed in another order differ by ~1e-16 of their size)."""
    return 1e-12 * max(1.0, float(np.max(np.abs(a))), float(np.max(np.abs(b))), float(np.max(np.abs(a - b))))


def is_constant(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the differences ``a - b`` are constant up to float rounding at the values' scale
    (``max - min`` of them within :func:`_rounding`)."""
    return bool(np.ptp(a - b) <= _rounding(a, b))


def is_zero(mean: float, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a mean difference of ``a - b`` is zero up to float rounding at the values' scale."""
    return abs(mean) <= _rounding(a, b)


def paired_t_test(x: ArrayLike, y: ArrayLike) -> PairedTestResult:
    """Two-sided paired t-test of ``mean(x - y) = 0``.

    Constant non-zero differences give ``p = 0``; differences that are all zero up to float rounding
    (:func:`is_zero`) give ``p = 1`` (no evidence).
    """
    a, b = paired_arrays(x, y)
    d = a - b
    mean = float(np.mean(d))
    if is_constant(a, b):
        if is_zero(mean, a, b):
            return PairedTestResult("t", 0.0, 1.0, a.size, mean)
        return PairedTestResult("t", math.copysign(math.inf, mean), 0.0, a.size, mean)
    res = stats.ttest_rel(a, b)
    return PairedTestResult("t", float(res.statistic), float(res.pvalue), a.size, mean)


def wilcoxon_test(x: ArrayLike, y: ArrayLike) -> PairedTestResult:
    """Two-sided Wilcoxon signed-rank test of the differences ``x - y`` (zeros dropped; p = 1 if all zero)."""
    a, b = paired_arrays(x, y)
    d = a - b
    mean = float(np.mean(d))
    if is_constant(a, b) and is_zero(mean, a, b):
        return PairedTestResult("wilcoxon", 0.0, 1.0, a.size, mean)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedTestResult("wilcoxon", float(res.statistic), float(res.pvalue), a.size, mean)


PAIRED_TESTS = {"t": paired_t_test, "wilcoxon": wilcoxon_test}
"""Test name -> function ``(x, y) -> PairedTestResult``."""

__all__ = ["PAIRED_TESTS", "PairedTestResult", "check_confidence", "is_constant", "is_zero", "paired_arrays",
           "paired_t_test", "wilcoxon_test"]
