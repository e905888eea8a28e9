"""Teacher ranking entropy over one training group, and the score-spread statistics beside it.

All functions take the teacher scores ``t = (t_1, ..., t_k)`` of one group (by convention ``t_1`` is the
labelled positive) and a temperature ``tau`` (default 1). They are pure, vectorised with NumPy/SciPy and
raise :class:`UndefinedStatistic` where the quantity is undefined (fewer than two documents, non-finite
scores), so callers can report and skip such groups instead of writing NaN silently.

Definitions (the project's brief; the paper's scripts normalised scores by their sum, which is meaningless
for negative logits, and mixed two entropies under one name):

- softmax entropy ``H(q) = -sum_i p_i log p_i`` with ``p = softmax(t / tau)``, in nats, ``0 <= H <= log k``;
- normalised softmax entropy ``H(q) / log k`` in ``[0, 1]``;
- pairwise entropy ``(1 / C(k, 2)) sum_{i<j} h2(sigmoid((t_i - t_j) / tau))`` in bits, where
  ``h2(p) = -p log2 p - (1-p) log2 (1-p)`` is the binary entropy; in ``[0, 1]``, 1 for constant scores.

References: Shannon (1948); the RankNet pairwise probability ``sigmoid(t_i - t_j)`` (Burges et al., 2005).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import entr, expit, log_softmax

from rankdistill.errors import is_integer


class UndefinedStatistic(ValueError):
    """A statistic is undefined for this input (e.g. one document, non-finite scores); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def host_array(values: ArrayLike) -> np.ndarray:
    """``values`` as a float64 numpy array; a torch tensor (on a GPU, in bf16, or needing grad, as a teacher's
    logits come) is detached and copied to the host first."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()  # type: ignore[union-attr]
    return np.asarray(values, dtype=np.float64)


def as_scores(scores: ArrayLike, *, min_size: int = 2) -> np.ndarray:
    """Validate a 1-d vector of finite teacher scores with at least ``min_size`` entries (float64)."""
    t = host_array(scores)
    if t.ndim != 1:
        raise UndefinedStatistic(f"expected a 1-d score vector, got shape {t.shape}")
    if t.size < min_size:
        raise UndefinedStatistic(f"a group needs at least {min_size} documents, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise UndefinedStatistic("non-finite teacher score (NaN or infinity) in the group")
    return t


def _check_temperature(temperature: float) -> float:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return float(temperature)


def softmax_probabilities(scores: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """``p = softmax(t / tau)``, computed in log space (stable for large score ranges)."""
    t = as_scores(scores, min_size=1)
    return np.exp(log_softmax(t / _check_temperature(temperature)))


def softmax_entropy(scores: ArrayLike, temperature: float = 1.0) -> float:
    """Softmax entropy ``H = -sum_i p_i ln p_i`` of ``p = softmax(t / tau)``, in nats.

    ``0 <= H <= ln k``; ``H = ln k`` exactly when all scores are equal; invariant to permuting the scores
    and to adding a constant to all of them.
    """
    p = softmax_probabilities(as_scores(scores), temperature)
    return float(np.sum(entr(p)))


def normalized_softmax_entropy(scores: ArrayLike, temperature: float = 1.0) -> float:
    """Softmax entropy divided by its maximum ``ln k``: a number in ``[0, 1]`` comparable across group sizes."""
    t = as_scores(scores)
    return softmax_entropy(t, temperature) / math.log(t.size)


def binary_entropy_bits(p: ArrayLike) -> np.ndarray:
    """``h2(p) = -p log2 p - (1 - p) log2 (1 - p)`` elementwise, in bits (``h2(0) = h2(1) = 0``)."""
    q = host_array(p)
    outside = ~((q >= 0.0) & (q <= 1.0))  # NaN is outside too
    if outside.any():
        raise ValueError(f"binary entropy needs probabilities in [0, 1], got {q[outside][0]}")
    return (entr(q) + entr(1.0 - q)) / math.log(2.0)


def pairwise_entropy(scores: ArrayLike, temperature: float = 1.0) -> float:
    """Mean binary entropy, in bits, of the teacher's pairwise preferences over all ``i < j``.

    ``(1 / C(k, 2)) sum_{i<j} h2(sigmoid((t_i - t_j) / tau))``; ``h2`` is symmetric, so the order of each
    pair does not matter. 1 bit when all scores are equal, towards 0 when every pair is clearly ordered.
    """
    t = as_scores(scores) / _check_temperature(temperature)
    i, j = np.triu_indices(t.size, k=1)
    return float(np.mean(binary_entropy_bits(expit(t[i] - t[j]))))


@dataclass(frozen=True)
class ScoreSpread:
    """How spread the teacher's scores are: population standard deviation and max - min margin."""

    std: float
    range: float


def score_spread(scores: ArrayLike) -> ScoreSpread:
    """Population standard deviation (``ddof=0``) and range ``max(t) - min(t)`` of a group's scores."""
    t = as_scores(scores)
    return ScoreSpread(std=float(np.std(t)), range=float(np.max(t) - np.min(t)))


def positive_rank(scores: ArrayLike, positive_index: int = 0) -> int:
    """1-based rank of the document at ``positive_index`` under the teacher; ties count against it.

    ``rank = 1 + #{j != i : t_j >= t_i}`` (pessimistic ties): a positive tied with a negative is not
    credited with the better rank. A rank above 1 signals a possible false negative in the group.
    """
    t = as_scores(scores, min_size=1)
    if not is_integer(positive_index):
        raise TypeError(f"positive_index must be an integer position, got {positive_index!r}")
    if not 0 <= positive_index < t.size:
        raise IndexError(f"positive_index {positive_index} out of range for {t.size} scores")
    others = np.delete(t, positive_index)
    return 1 + int(np.sum(others >= t[positive_index]))


__all__ = [
    "ScoreSpread",
    "UndefinedStatistic",
    "as_scores",
    "binary_entropy_bits",
    "host_array",
    "normalized_softmax_entropy",
    "pairwise_entropy",
    "positive_rank",
    "score_spread",
    "softmax_entropy",
    "softmax_probabilities",
]
