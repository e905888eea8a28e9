"""``bm25``: negatives from the BM25 top-``depth`` of the query (bm25s; k1 1.2, b 0.75; English stop words
removed, Snowball-stemmed)."""

from __future__ import annotations

from collections.abc import Sequence

from rankdistill.mining.base import MiningQuery, Strategy, register_strategy


@register_strategy("bm25")
class BM25Strategy(Strategy):
    """The BM25 ranking of the top ``depth`` documents; window and sampling are the shared ones."""

    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        return self.context.retrieve("bm25", list(queries), self.config.depth)

    def settings(self) -> dict:
        from rankdistill.retrieval.bm25 import BM25Config

        c = BM25Config()
        return {"first_stage": "bm25", "k1": c.k1, "b": c.b, "method": c.method}
