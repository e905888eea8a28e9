"""Dense retrieval: exact inner-product search (FAISS ``IndexFlatIP``) over bi-encoder embeddings.

Document embeddings come from :func:`rankdistill.models.embeddings.encode_texts`, which caches them on disk
keyed by model and text hash, so searching the same corpus again (re-mining with another seed or depth)
encodes nothing. ``similarity="cosine"`` L2-normalises queries and documents (inner product = cosine);
``dot`` keeps the model's own embeddings (all-MiniLM-L6-v2 already normalises its output).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rankdistill.data.runs import Run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseConfig:
    """Encoder settings of a dense retriever."""

    model: str | None = None
    similarity: str = "dot"
    batch_size: int = 64
    max_length: int | None = None
    device: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"unknown similarity {self.similarity!r}; use dot or cosine")


class DenseRetriever:
    """An exact FAISS inner-product index over a corpus' embeddings; ``search`` returns a run.

    Args:
        corpus: a :class:`~rankdistill.data.docstore.DocStore` (``ids()`` and ``text()``).
        config: the encoder and its settings.
        show_progress: progress bar while encoding documents that are not cached yet.
    """

    def __init__(self, corpus, config: DenseConfig | None = None, show_progress: bool = False) -> None:
        import faiss

        self.config = config or DenseConfig()
        self.doc_ids = corpus.ids()
        vectors = self._encode([corpus.text(d) for d in self.doc_ids], show_progress)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        logger.debug("dense index: %d documents, dimension %d", len(self.doc_ids), vectors.shape[1])

    def _encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        from rankdistill.models.embeddings import encode_texts

        c = self.config
        return encode_texts(texts, c.model, batch_size=c.batch_size, max_length=c.max_length,
                            normalize=c.similarity == "cosine", device=c.device, cache_dir=c.cache_dir,
                            show_progress=show_progress)

    def search(self, queries: Mapping[str, str], k: int = 100, show_progress: bool = False) -> Run:
        """Top-``k`` documents per query as ``{qid: {docid: inner product}}``."""
        qids = list(queries)
        if not qids:
            return {}
        k = min(k, len(self.doc_ids))
        qv = np.ascontiguousarray(self._encode([queries[q] for q in qids], show_progress), dtype=np.float32)
        scores, idx = self.index.search(qv, k)
        run: Run = {}
        for row, q in enumerate(qids):
            run[q] = {self.doc_ids[int(i)]: float(s) for i, s in zip(idx[row], scores[row]) if i >= 0}
        return run
