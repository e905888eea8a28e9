"""``random``: negatives drawn uniformly from the corpus (judged relevant documents excluded)."""

from __future__ import annotations

from collections.abc import Sequence

from rankdistill.mining.base import MiningQuery, Strategy, register_strategy
from rankdistill.mining.pool import draw_random
from rankdistill.mining.seeding import query_rng


@register_strategy("random")
class RandomStrategy(Strategy):
    """``pool`` documents per query, uniformly without replacement, from the per-query ``candidates`` stream."""

    ranked = False

    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        ids = self.context.corpus_ids
        return {q.query_id: draw_random(query_rng(self.config.seed, q.query_id, "candidates"), ids, self.config.pool,
                                        q.excluded) for q in queries}

    def default_max_rank(self) -> int | None:
        return None
