"""Reciprocal-rank fusion of several rankings (Cormack, Clarke & Buettcher, SIGIR 2009).

    RRF(d) = sum over runs s that rank d within their top ``depth`` of  1 / (k + rank_s(d))

with ``rank_s`` 1-based in each run's order (score descending, ties by doc id) and ``k = 60`` by default (the
paper's constant, which damps the influence of the very top ranks). Only ranks matter, so runs with scores on
different scales (BM25, dot products, logits) fuse without normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rankdistill.data.runs import Run, check_cutoff, ranked


def rrf_scores(rankings: Sequence[Sequence[str]], k: int = 60) -> dict[str, float]:
    """RRF scores of the documents of ``rankings`` (lists of doc ids, best first)."""
    if k < 0:
        raise ValueError("the RRF constant k must be non-negative")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


def reciprocal_rank_fusion(runs: Sequence[Mapping[str, Mapping[str, float]]], k: int = 60,
                           depth: int | None = None) -> Run:
    """Fuse runs per query; each run contributes its top ``depth`` documents (all when ``None``)."""
    check_cutoff(depth, "depth")
    queries = sorted({q for run in runs for q in run})
    out: Run = {}
    for q in queries:
        rankings = [[d for d, _ in ranked(run[q])][:depth] for run in runs if q in run]
        out[q] = rrf_scores(rankings, k)
    return out
