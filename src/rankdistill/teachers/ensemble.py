"""An ensemble of teachers named as one teacher: the mean of z-normalised scores.

Teachers score in different spaces and scales (logits, log-probabilities, cosine similarities), so their
raw scores cannot be averaged. Each member ``m`` is first standardised with its own mean and (population)
standard deviation over the scored pairs, then the members are averaged:

    z_m(q, d) = (s_m(q, d) - mu_m) / sigma_m,        s_ens(q, d) = (1 / M) * sum_m z_m(q, d)

with ``mu_m = mean_i s_m,i`` and ``sigma_m = sqrt(mean_i (s_m,i - mu_m)^2)`` over the pairs of the first
scoring job. The statistics are then frozen (recorded in the store's teacher info), so that every pair's
ensemble score is a fixed function of the members' scores: incremental runs and a resume after a crash give
exactly the scores of one uninterrupted run. (The standardisation is global, not per query, so the ensemble
keeps each member's score differences between queries comparable.) Reference: z-score normalisation for
score fusion, Montague & Aslam, "Relevance score normalization for metasearch", CIKM 2001.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ZStats:
    """Mean and population standard deviation of one member's scores, and how many scores they came from."""

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> ZStats:
        return cls(float(d["mean"]), float(d["std"]), int(d["n"]))


def zstats(scores: np.ndarray) -> ZStats:
    """``mu`` and ``sigma`` (ddof 0) of ``scores``; a constant member gets ``sigma = 1`` (its z-scores are 0)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("cannot standardise an empty set of scores")
    mu = float(s.mean())
    sigma = float(s.std())
    return ZStats(mu, sigma if sigma > 0 else 1.0, int(s.size))


def mean_z(member_scores: np.ndarray, stats: Sequence[ZStats]) -> np.ndarray:
    """Ensemble scores: mean over members (rows of ``member_scores [M, n]``) of their z-scores."""
    s = np.asarray(member_scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(stats):
        raise ValueError(f"expected scores [members={len(stats)}, pairs], got shape {s.shape}")
    mu = np.array([st.mean for st in stats])[:, None]
    sigma = np.array([st.std for st in stats])[:, None]
    return ((s - mu) / sigma).mean(axis=0)
