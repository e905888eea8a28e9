"""Random-effects meta-analysis of a per-collection effect (e.g. a system's mean difference to a baseline).

Each collection ``i`` contributes an effect ``y_i`` (mean per-query difference) and its within-collection
variance ``v_i = sd(d)^2 / n_i``. The random-effects model ``y_i ~ N(mu, v_i + tau^2)`` is fitted with

- ``dl``: DerSimonian & Laird (1986): ``Q = sum w_i (y_i - y_FE)^2`` with ``w_i = 1/v_i``,
  ``tau^2 = max(0, (Q - (k-1)) / (sum w_i - sum w_i^2 / sum w_i))``;
- ``pm``: Paule & Mandel (1982), iterated (recommended by Veroniki et al. 2016), truncated at 0;

then ``mu_RE = sum w*_i y_i / sum w*_i`` with ``w*_i = 1 / (v_i + tau^2)``, standard error
``1 / sqrt(sum w*_i)``, a normal ``1 - alpha`` interval, ``I^2 = max(0, (Q - (k-1)) / Q)`` (Higgins &
Thompson 2002) and Cochran's heterogeneity test ``Q ~ chi2(k-1)``.

Computed by :func:`statsmodels.stats.meta_analysis.combine_effects`; its ``dl`` estimate is not truncated
at zero, so a negative ``tau^2`` is replaced by 0 here (then the random-effects estimate is the fixed-effect one).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from rankdistill.stats.paired import check_confidence

_METHODS = {"dl": "dl", "pm": "iterated"}


@dataclass(frozen=True)
class MetaAnalysis:
    """A random-effects combination of ``k`` effects."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    tau2: float
    i2: float
    q: float
    q_pvalue: float
    k: int
    method: str
    labels: tuple[str, ...]
    effects: tuple[float, ...]
    variances: tuple[float, ...]
    weights: tuple[float, ...]


def random_effects(effects: Sequence[float], variances: Sequence[float], labels: Sequence[str] | None = None,
                   *, method: str = "dl", confidence: float = 0.95) -> MetaAnalysis:
    """Random-effects meta-analysis (see the module docstring). Needs ``k >= 2`` and positive variances."""
    if method not in _METHODS:
        raise ValueError(f"unknown meta-analysis method {method!r}; known: {', '.join(_METHODS)}")
    y = np.asarray(effects, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    k = y.size
    if k < 2 or v.shape != y.shape:
        raise ValueError(f"a meta-analysis needs at least 2 effects with one variance each, got {k}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("effects must be finite and variances finite and > 0")
    check_confidence(confidence)
    names = tuple(labels) if labels is not None else tuple(str(i) for i in range(k))
    if len(names) != k:
        raise ValueError(f"{len(names)} labels for {k} effects; give one label per effect")
    with warnings.catch_warnings():  # an untruncated negative tau^2 makes statsmodels take sqrt of < 0
        warnings.simplefilter("ignore", RuntimeWarning)
        res = combine_effects(y, v, method_re=_METHODS[method], row_names=list(names))
    tau2 = float(res.tau2)
    if tau2 > 0:
        est, se, w = float(res.mean_effect_re), float(res.sd_eff_w_re), np.asarray(res.weights_rel_re)
    else:  # tau^2 truncated at 0: the random-effects model reduces to the fixed-effect one
        tau2 = 0.0
        est, se, w = float(res.mean_effect_fe), float(res.sd_eff_w_fe), np.asarray(res.weights_rel_fe)
    z = stats.norm.isf((1 - confidence) / 2)
    q = float(res.q)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return MetaAnalysis(est, se, est - z * se, est + z * se, confidence, tau2, i2, q,
                        float(stats.chi2.sf(q, k - 1)), k, method, names, tuple(map(float, y)),
                        tuple(map(float, v)), tuple(map(float, w)))


@dataclass(frozen=True)
class MeanInterval:
    """Mean of a few values (seeds, collections) and its Student-t interval (NaN for a single value)."""

    mean: float
    low: float
    high: float
    sd: float
    n: int
    confidence: float


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    """``mean +- t_{(1+c)/2, n-1} sd / sqrt(n)`` (sample sd, ``ddof=1``); NaN bounds when ``n = 1``."""
    check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("mean_interval needs at least one finite value")
    m = float(np.mean(x))
    if x.size == 1:
        return MeanInterval(m, math.nan, math.nan, math.nan, 1, confidence)
    sd = float(np.std(x, ddof=1))
    if sd == 0:
        return MeanInterval(m, m, m, 0.0, x.size, confidence)
    lo, hi = stats.t.interval(confidence, x.size - 1, loc=m, scale=sd / math.sqrt(x.size))
    return MeanInterval(m, float(lo), float(hi), sd, x.size, confidence)


__all__ = ["MeanInterval", "MetaAnalysis", "mean_interval", "random_effects"]
