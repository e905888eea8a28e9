"""Locality of a training group in embedding space: robust diameter and mean distances.

The paper bounds the generalisation gap by the *essential diameter* of a query's document set. This module
measures it on real embeddings (any encoder; the default is the bundled all-MiniLM-L6-v2), with the metric
named in every output (the paper's code said cosine in its docstring and computed Euclidean distances).

- distance ``d(u, v)``: ``cosine`` = ``1 - u.v / (|u| |v|)`` in ``[0, 2]``, or ``l2`` = ``|u - v|_2``;
- robust diameter ``Delta_alpha`` = the alpha-quantile (default 0.95, linear interpolation) of the
  ``C(k, 2)`` pairwise distances between the group's document embeddings; ``alpha = 1`` gives the ordinary
  diameter, a lower alpha ignores a few outlying documents;
- mean distance of a set of embeddings to a reference set: the mean of all cross distances.

Distances come from :func:`scipy.spatial.distance.pdist` / :func:`~scipy.spatial.distance.cdist`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.distance import cdist, pdist

from rankdistill.diagnostics.entropy import UndefinedStatistic, host_array

Metric = Literal["cosine", "l2"]
METRICS: tuple[str, ...] = ("cosine", "l2")
_SCIPY_METRIC = {"cosine": "cosine", "l2": "euclidean"}

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


def _check_metric(metric: str) -> str:
    if metric not in _SCIPY_METRIC:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return _SCIPY_METRIC[metric]


def as_embeddings(embeddings: ArrayLike, metric: str, *, min_rows: int = 1) -> np.ndarray:
    """Validate a 2-d array of finite embeddings (float64); cosine needs non-zero rows."""
    x = host_array(embeddings)
    if x.ndim != 2:
        raise UndefinedStatistic(f"expected a 2-d embedding matrix, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise UndefinedStatistic(f"need at least {min_rows} embeddings, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise UndefinedStatistic("non-finite value in the embeddings")
    if metric == "cosine" and np.any(np.linalg.norm(x, axis=1) == 0):
        raise UndefinedStatistic("an all-zero embedding has no cosine distance")
    return x


def pairwise_distances(embeddings: ArrayLike, metric: Metric = "cosine") -> np.ndarray:
    """The ``C(k, 2)`` distances between the rows of ``embeddings`` (condensed order, ``i < j``)."""
    name = _check_metric(metric)
    x = as_embeddings(embeddings, metric, min_rows=2)
    d = pdist(x, metric=name)
    return np.clip(d, 0.0, None)  # cosine of identical vectors can round to -1e-16


def robust_diameter(embeddings: ArrayLike, alpha: float = 0.95, metric: Metric = "cosine") -> float:
    """``Delta_alpha`` = alpha-quantile (linear interpolation) of the pairwise distances; >= 0."""
    if isinstance(alpha, str):  # robust_diameter(x, "l2"): the metric given where alpha goes
        raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}; give the metric as metric={alpha!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(np.quantile(pairwise_distances(embeddings, metric), alpha))


def mean_distance(embeddings: ArrayLike, reference: ArrayLike, metric: Metric = "cosine") -> float:
    """Mean over all pairs ``(x in embeddings, r in reference)`` of ``d(x, r)``."""
    name = _check_metric(metric)
    x = as_embeddings(embeddings, metric)
    r = as_embeddings(np.atleast_2d(host_array(reference)), metric)
    if x.shape[1] != r.shape[1]:
        raise UndefinedStatistic(f"dimension mismatch: {x.shape[1]} vs {r.shape[1]}")
    return float(np.mean(np.clip(cdist(x, r, metric=name), 0.0, None)))


def summary_quantiles(values: Iterable[float], quantiles: tuple[float, ...] = DEFAULT_QUANTILES
                      ) -> dict[str, float]:
    """Dataset-level summary of per-query values: ``{"n", "mean", "q0.05", ...}`` over the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    out: dict[str, float] = {"n": float(v.size)}
    if v.size == 0:
        return out
    out["mean"] = float(np.mean(v))
    for q in quantiles:
        out[f"q{q:g}"] = float(np.quantile(v, q))
    return out


def dataset_summary(columns: Mapping[str, Iterable[float]],
                    quantiles: tuple[float, ...] = DEFAULT_QUANTILES) -> dict[str, dict[str, float]]:
    """:func:`summary_quantiles` for each named column."""
    return {name: summary_quantiles(vals, quantiles) for name, vals in columns.items()}


__all__ = [
    "DEFAULT_QUANTILES",
    "METRICS",
    "Metric",
    "as_embeddings",
    "dataset_summary",
    "mean_distance",
    "pairwise_distances",
    "robust_diameter",
    "summary_quantiles",
]
