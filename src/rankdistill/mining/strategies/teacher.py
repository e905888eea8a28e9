"""``teacher``: a cross-encoder re-ranks the BM25 top-``depth``; negatives come from its top-m (default 100).

The rank window defaults to ``1..100`` of the teacher's ranking (``--max-rank`` sets m), judged relevant
documents are then removed, and the pool is sampled from what remains (``--sample random``) or taken from
the top (``--sample top``). Unlike the paper's code, "top-100" means the teacher's 100 best, not 100 random
documents of the BM25 top-200.
"""

from __future__ import annotations

from collections.abc import Sequence

from rankdistill.mining.base import MiningQuery, Strategy, register_strategy

TEACHER_TOP_M = 100


@register_strategy("teacher")
class TeacherStrategy(Strategy):
    """BM25 top-``depth``, re-ranked by the teacher's scores (ties by doc id)."""

    needs_teacher = True

    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        first = self.context.retrieve("bm25", list(queries), self.config.depth)
        scores = self.context.teacher.get((q, d) for q, docs in first.items() for d in docs)
        return {q: sorted(docs, key=lambda d, q=q: (-scores[(q, d)], d)) for q, docs in first.items()}

    def default_max_rank(self) -> int | None:
        return TEACHER_TOP_M

    def settings(self) -> dict:
        return {"first_stage": "bm25", "reranker": self.context.teacher.teacher_id,
                "teacher_top_m": min(self.config.max_rank or TEACHER_TOP_M, self.config.depth)}
