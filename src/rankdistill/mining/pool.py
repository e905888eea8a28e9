"""The logic every strategy shares: rank window, exclusions, the false-negative guard, sampling, top-up.

A strategy proposes candidate documents per query (a ranking, best first, or an unordered set); this module
turns them into a negative pool:

1. rank window: keep ranks ``min_rank..max_rank`` (1-based, inclusive) of the strategy's ranking, counted
   with the judged documents still in it (so ``--min-rank 5`` skips the retriever's first four results);
2. exclusions: judged relevant documents (any relevance > 0, not only the positives) and repeats are dropped:
   a positive is never a negative;
3. false-negative guard (optional, needs a teacher): drop a candidate ``d`` when
   ``t(q, d) > min_p t(q, p) - margin``, i.e. the teacher scores it within ``margin`` of the lowest positive;
4. sampling: ``top`` keeps the first ``pool`` candidates in ranking order, ``random`` a uniform sample of
   ``pool`` of them (order: as drawn);
5. top-up: a query with fewer than ``pool`` candidates is filled with uniformly drawn corpus documents (or
   skipped, by choice).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence

import numpy as np


def rank_window(ranked: Sequence[str], min_rank: int = 1, max_rank: int | None = None) -> list[str]:
    """Ranks ``min_rank..max_rank`` (1-based, inclusive) of ``ranked``."""
    return list(ranked[max(min_rank, 1) - 1:max_rank])


def exclude(candidates: Iterable[str], excluded: Container[str]) -> list[str]:
    """``candidates`` without excluded documents and without repeats, order kept."""
    seen: set[str] = set()
    out = []
    for d in candidates:
        if d in excluded or d in seen:
            continue
        seen.add(d)
        out.append(d)
    return out


def guard_threshold(positive_scores: Sequence[float], margin: float) -> float:
    """The highest teacher score a negative may have: ``min(positive scores) - margin``."""
    if not positive_scores:
        raise ValueError("the false-negative guard needs at least one positive score")
    return min(positive_scores) - margin


def false_negative_guard(candidates: Sequence[str], scores: Mapping[str, float],
                         threshold: float) -> tuple[list[str], list[str]]:
    """Split ``candidates`` into kept (``score <= threshold``) and dropped (likely false negatives)."""
    kept, dropped = [], []
    for d in candidates:
        (kept if scores[d] <= threshold else dropped).append(d)
    return kept, dropped


def sample(candidates: Sequence[str], k: int, mode: str, rng: np.random.Generator) -> list[str]:
    """``k`` of ``candidates``: the first ``k`` (``top``) or a uniform sample without replacement (``random``,
    in the order drawn; all of them, shuffled, when there are at most ``k``)."""
    if mode == "top":
        return list(candidates[:k])
    if mode != "random":
        raise ValueError(f"unknown sampling mode {mode!r}")
    n = len(candidates)
    idx = rng.permutation(n) if n <= k else rng.choice(n, size=k, replace=False)
    return [candidates[int(i)] for i in idx]


def draw_random(rng: np.random.Generator, corpus_ids: Sequence[str], n: int, excluded: Container[str]) -> list[str]:
    """Up to ``n`` distinct corpus documents drawn uniformly, none of them in ``excluded``.

    Draws ``n`` positions without replacement, drops excluded ones and draws again (from the rest) until
    ``n`` are found or the corpus is exhausted; deterministic for a given generator state.
    """
    size = len(corpus_ids)
    out: list[str] = []
    tried: set[int] = set()
    while len(out) < n and len(tried) < size:
        want = min(size - len(tried), (n - len(out)) * 2 + 8)
        if len(tried) == 0:
            positions = rng.choice(size, size=want, replace=False)
        else:
            rest = np.setdiff1d(np.arange(size), np.fromiter(tried, dtype=np.int64), assume_unique=True)
            positions = rest[rng.choice(len(rest), size=want, replace=False)]
        for p in positions.tolist():
            tried.add(p)
            d = corpus_ids[p]
            if d not in excluded and len(out) < n:
                out.append(d)
    return out
