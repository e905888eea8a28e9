"""Bootstrap confidence interval of the mean per-query difference between two systems.

The per-query differences ``d_q = x_q - y_q`` are resampled with replacement (queries are the sampling
unit, which keeps the pairing), ``B`` times, with a seeded generator; the interval is the BCa interval
(bias-corrected and accelerated; Efron 1987) or the percentile interval of the resampled means (Efron &
Tibshirani 1993, ch. 13), computed by :func:`scipy.stats.bootstrap`. Same seed, same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from rankdistill.stats.paired import check_confidence, is_constant, paired_arrays

BOOTSTRAP_METHODS = ("BCa", "percentile")
"""The intervals :func:`bootstrap_mean_diff` computes (scipy's method names)."""


@dataclass(frozen=True)
class BootstrapInterval:
    """A bootstrap interval of the mean difference, with how it was made."""

    mean_diff: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    method: str
    seed: int


def bootstrap_mean_diff(x: ArrayLike, y: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 10_000,
                        seed: int = 0, method: str = "BCa") -> BootstrapInterval:
    """Bootstrap ``confidence`` interval of ``mean(x - y)`` over queries (``method``: ``BCa`` or ``percentile``).

    Constant differences have a degenerate bootstrap distribution: the interval is ``(d, d)``.
    """
    check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"method must be one of {', '.join(BOOTSTRAP_METHODS)}, got {method!r}")
    a, b = paired_arrays(x, y)
    d = a - b
    mean = float(np.mean(d))
    if is_constant(a, b):
        return BootstrapInterval(mean, mean, mean, confidence, n_resamples, method, seed)
    res = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method=method,
                          rng=np.random.default_rng(seed), vectorized=True)
    ci = res.confidence_interval
    return BootstrapInterval(mean, float(ci.low), float(ci.high), confidence, n_resamples, method, seed)


__all__ = ["BOOTSTRAP_METHODS", "BootstrapInterval", "bootstrap_mean_diff"]
