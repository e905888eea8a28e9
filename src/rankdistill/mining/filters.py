"""The hard-negative ensemble filter of sentence-transformers' ``msmarco-hard-negatives`` training data.

For one query with positives P and several systems' rankings, the teacher (a cross-encoder) gives scores t.
With ``threshold = min_{p in P} t(q, p) - margin`` (margin 0.5 by default), each system in turn contributes
up to ``n`` (default 10) of its documents, walking its ranking from the top: a document is taken when its
teacher score is ``<= threshold`` and no earlier system contributed it (a repeat does not count toward the
system's ``n``). The union, in the order taken, is the query's candidate set, padded later with random documents.
This is the rule of ``train_bi-encoder_mnrl.py`` in sentence-transformers' MS MARCO examples, which built
the negatives of the "Ensemble" domain the paper studies.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

from rankdistill.mining.pool import guard_threshold


def ensemble_filter(system_rankings: Sequence[Sequence[str]], scores: Mapping[str, float],
                    positive_scores: Sequence[float], n: int = 10, margin: float = 0.5,
                    excluded: Container[str] = ()) -> list[str]:
    """The union of up to ``n`` teacher-filtered negatives per system (see the module docstring).

    Args:
        system_rankings: one ranking (doc ids, best first) per system.
        scores: teacher score of every document in the rankings (for this query).
        positive_scores: teacher scores of the query's positives.
        n: negatives kept per system.
        margin: a negative must score at least ``margin`` below the lowest positive.
        excluded: documents never taken (the judged relevant ones).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    threshold = guard_threshold(positive_scores, margin)
    taken: list[str] = []
    seen: set[str] = set()
    for ranking in system_rankings:
        added = 0
        for d in ranking:
            if added >= n:
                break
            if d in excluded or d in seen or scores[d] > threshold:
                continue
            seen.add(d)
            taken.append(d)
            added += 1
    return taken
