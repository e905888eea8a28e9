"""``ensemble``: candidates from several systems, combined like sentence-transformers' hard-negative ensemble.

Systems are TREC runs (``--systems a.trec,b.trec``) and/or named first stages (``--retrievers bm25,dense``;
the default when no run is given). With ``--fusion filter`` (default) each system contributes up to
``--ensemble-n`` negatives whose teacher score is at most (lowest positive score - ``--ensemble-margin``), in
its rank order, and the union is the candidate set (:func:`rankdistill.mining.filters.ensemble_filter`);
the shared logic then samples the pool and tops it up with random documents. With ``--fusion rrf`` the
systems' rankings are fused by reciprocal rank (:mod:`rankdistill.retrieval.fusion`) into one ranking,
used like any retriever's (no teacher needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rankdistill.errors import UserInputError
from rankdistill.mining.base import MiningQuery, Strategy, register_strategy
from rankdistill.mining.context import rankings
from rankdistill.mining.filters import ensemble_filter
from rankdistill.retrieval.fusion import rrf_scores

DEFAULT_RETRIEVERS = ("bm25", "dense")


@register_strategy("ensemble")
class EnsembleStrategy(Strategy):
    """Per-system teacher-filtered negatives, unioned (``filter``), or a reciprocal-rank fused ranking (``rrf``)."""

    needs_teacher = True

    def __init__(self, context) -> None:
        super().__init__(context)
        c = self.config
        self.ranked = c.fusion == "rrf"
        self.needs_teacher = c.fusion == "filter"
        self.retrievers = tuple(c.retrievers) or (() if c.systems else DEFAULT_RETRIEVERS)
        for name in self.retrievers:
            if name not in DEFAULT_RETRIEVERS:
                raise UserInputError(f"unknown retriever {name!r} in --retrievers; known: bm25, dense")
        if len(c.systems) + len(self.retrievers) < 1:
            raise UserInputError("--strategy ensemble needs systems", fix="give --systems runs and/or --retrievers")

    def _system_rankings(self, queries: Sequence[MiningQuery]) -> list[tuple[str, dict[str, list[str]]]]:
        wanted = {q.query_id for q in queries}
        systems = []
        for path in self.config.systems:
            run = {q: docs for q, docs in self.context.run_file(path, "--systems").items() if q in wanted}
            systems.append((Path(path).name, rankings(run, self.config.depth)))
        for name in self.retrievers:
            systems.append((name, self.context.retrieve(name, list(queries), self.config.depth)))
        return systems

    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        systems = self._system_rankings(queries)
        if self.ranked:
            out = {}
            for q in queries:
                fused = rrf_scores([s.get(q.query_id, []) for _, s in systems], self.config.rrf_k)
                out[q.query_id] = sorted(fused, key=lambda d, f=fused: (-f[d], d))
            return out
        pairs = [(q.query_id, d) for q in queries
                 for d in (*q.positives, *(d for _, s in systems for d in s.get(q.query_id, [])))]
        scores = self.context.teacher.get(pairs)
        out = {}
        kept = 0
        for q in queries:
            lists = [s.get(q.query_id, []) for _, s in systems]
            doc_scores = {d: scores[(q.query_id, d)] for ranking in lists for d in ranking}
            pos = [scores[(q.query_id, p)] for p in q.positives]
            out[q.query_id] = ensemble_filter(lists, doc_scores, pos, self.config.ensemble_n,
                                              self.config.ensemble_margin, q.excluded)
            kept += len(out[q.query_id])
        self.counts["ensemble_negatives_kept"] = self.counts.get("ensemble_negatives_kept", 0) + kept
        return out

    def fill_target(self) -> int:
        """The filter fusion pads its union with random documents only as far as one group needs (group size
        - 1), as the paper's rule does ("union, pad with random, sample 15"): a union of 20 in a pool of 32 is
        kept as 20 hard negatives, not diluted with 12 random ones. ``rrf``'s ranking fills the pool like any
        ranked strategy."""
        c = self.config
        return c.pool if self.ranked else min(c.pool, c.group_size - 1)

    def settings(self) -> dict:
        c = self.config
        d = {"systems": [Path(p).name for p in c.systems], "retrievers": list(self.retrievers), "fusion": c.fusion}
        if c.fusion == "filter":
            d.update(n_per_system=c.ensemble_n, margin=c.ensemble_margin, teacher=self.context.teacher.teacher_id)
        else:
            d.update(rrf_k=c.rrf_k)
        return d
