"""``dense``: negatives from a bi-encoder's top-``depth`` (FAISS ``IndexFlatIP``; embeddings cached on disk)."""

from __future__ import annotations

from collections.abc import Sequence

from rankdistill.mining.base import MiningQuery, Strategy, register_strategy


@register_strategy("dense")
class DenseStrategy(Strategy):
    """Exact inner-product search with ``--encoder`` (default: the bundled all-MiniLM-L6-v2)."""

    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        return self.context.retrieve("dense", list(queries), self.config.depth)

    def settings(self) -> dict:
        from rankdistill.models import model_id

        return {"first_stage": "dense", "encoder": model_id(self.config.encoder),
                "similarity": self.config.similarity, "index": "faiss.IndexFlatIP"}
