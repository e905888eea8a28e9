"""kappa: how far a teacher's softmax over a group is from uniform, seen from its least likely document.

``kappa = max_i (1/k) / p_i = 1 / (k * min_i p_i)`` with ``p = softmax(t / tau)`` over the ``k`` documents
of the group. ``kappa >= 1``, with equality exactly for constant scores; it is the largest importance weight
``q_i / p_i`` needed to re-weight samples drawn from ``p`` into uniform samples ``q = 1/k``, so it bounds the
sampling bias of using the teacher's distribution in place of uniform sampling (the paper's kappa).

Computed in log space: ``log kappa = -log k - min_i log p_i = max_i logsumexp(t/tau) - t_i/tau - log k``,
so that groups with a very large score range give a finite ``log_kappa`` even when ``kappa`` overflows.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_softmax

from rankdistill.diagnostics.entropy import _check_temperature, as_scores


def log_kappa(scores: ArrayLike, temperature: float = 1.0) -> float:
    """``log kappa = -log k - min_i log softmax(t / tau)_i`` (natural log, >= 0)."""
    t = as_scores(scores)
    logp = log_softmax(t / _check_temperature(temperature))
    return float(max(0.0, -math.log(t.size) - float(np.min(logp))))


def kappa(scores: ArrayLike, temperature: float = 1.0) -> float:
    """``kappa = 1 / (k min_i p_i)`` with ``p = softmax(t / tau)``; ``inf`` if it overflows a float64."""
    lk = log_kappa(scores, temperature)
    return math.exp(lk) if lk < 709.0 else math.inf


__all__ = ["kappa", "log_kappa"]
