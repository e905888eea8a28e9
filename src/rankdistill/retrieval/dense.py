"""Dense retrieval: exact inner-product search over bi-encoder embeddings.

The search is exhaustive and exact: FAISS ``IndexFlatIP`` when faiss is installed, else (or when asked) a
blocked matrix product + top-k in torch, on the GPU when there is one. Both return the same documents up to
the order of exact ties.

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
from rankdistill.errors import UserInputError, check_field_types
from rankdistill.retrieval.base import check_search

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
    backend: str = "auto"
    """``faiss``, ``torch`` or ``auto`` (faiss when importable, else torch)."""

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"unknown similarity {self.similarity!r}; use dot or cosine")
        if self.backend not in ("auto", "faiss", "torch"):
            raise ValueError(f"unknown search backend {self.backend!r}; use auto, faiss or torch")
        if self.batch_size < 1:  # types: check_field_types above
            raise UserInputError(f"the encoding batch size must be at least 1, got {self.batch_size}", fix="e.g. 64")
        if self.max_length is not None and self.max_length < 1:
            raise UserInputError(f"the encoder's token limit must be at least 1, got {self.max_length}",
                                 fix="e.g. 256, or none for the model's own")


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


SCORE_BLOCK_ELEMENTS = 1 << 27
"""Most query-by-document scores :func:`exact_top_k` holds at once (512 MB of float32)."""


def exact_top_k(docs, queries: np.ndarray, k: int, device: str | None = None,
                block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of each query row against ``docs`` (scores descending), with torch.

    ``docs`` is a float32 matrix, or a torch tensor already on the device (:func:`device_matrix`; a retriever
    searched block after block keeps it there instead of copying 13.5 GB of MS MARCO vectors per call).
    Queries go in blocks of at most ``block`` rows, fewer where the corpus is large, so that a block's score
    matrix holds at most :data:`SCORE_BLOCK_ELEMENTS` scores (1,024 queries against MS MARCO's 8.8M passages
    would be 36 GB; the block is then 15 queries). Returns ``(scores, indices)`` shaped ``(n_queries, k)`` like
    FAISS ``search``.
    """
    import torch

    d = docs if isinstance(docs, torch.Tensor) else device_matrix(docs, device)
    block = max(1, min(block, SCORE_BLOCK_ELEMENTS // max(1, len(d))))
    scores_out, idx_out = [], []
    for start in range(0, len(queries), block):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + block], dtype=np.float32)).to(d.device)
        s, i = torch.topk(q @ d.T, k, dim=1)
        scores_out.append(s.cpu().numpy())
        idx_out.append(i.cpu().numpy())
    if not scores_out:
        return np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64)
    return np.concatenate(scores_out), np.concatenate(idx_out)


def device_matrix(docs: np.ndarray, device: str | None = None):
    """``docs`` as a float32 torch tensor on ``device`` (resolved: a GPU where there is one). On the CPU a
    float32 array, a read-only memory map included, is shared, not copied (the search only reads it)."""
    import warnings

    import torch

    from rankdistill.teachers.runtime import resolve_device

    with warnings.catch_warnings():  # "The given NumPy array is not writable": nothing writes to it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(docs, dtype=np.float32)).to(resolve_device(device))


class DenseRetriever:
    """An exact inner-product index over a corpus' embeddings (FAISS or torch); ``search`` returns a run.

    FAISS holds its own copy of the matrix in memory. The torch backend searches the matrix in place on the
    CPU, and on a GPU keeps one copy there from the first search for the retriever's life (13.5 GB for MS
    MARCO at 384 dimensions), instead of copying it at every search.

    Args:
        corpus: a :class:`~rankdistill.data.docstore.DocStore` (``ids()`` and ``text()``).
        config: the encoder and its settings.
        show_progress: progress bar while encoding documents that are not cached yet.
        keep_matrix: keep the corpus' whole embedding matrix in the cache, for an encoder searched again in
            other processes (:func:`~rankdistill.models.embeddings.encode_corpus`).
    """

    def __init__(self, corpus, config: DenseConfig | None = None, show_progress: bool = False,
                 keep_matrix: bool = False) -> None:
        from rankdistill.models.embeddings import encode_corpus

        self.config = config or DenseConfig()
        self.doc_ids = corpus.ids()
        vectors = np.ascontiguousarray(encode_corpus(corpus, **self._encoding(), show_progress=show_progress,
                                                     keep_matrix=keep_matrix), dtype=np.float32)
        backend = self.config.backend
        if backend == "auto":
            backend = "faiss" if _faiss_available() else "torch"
        self.backend = backend
        if backend == "faiss":
            import faiss

            self.index = faiss.IndexFlatIP(vectors.shape[1])
            self.index.add(vectors)
        else:
            self.vectors = vectors
            self._on_device = None  # the torch tensor searched, made at the first search
        logger.debug("dense index (%s): %d documents, dimension %d", backend, len(self.doc_ids), vectors.shape[1])

    def _encoding(self) -> dict:
        """The encoder settings of documents and queries alike."""
        c = self.config
        return {"model": c.model, "batch_size": c.batch_size, "max_length": c.max_length,
                "normalize": c.similarity == "cosine", "device": c.device, "cache_dir": c.cache_dir}

    def _encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Query vectors. Their cache is a folder of its own (``queries/`` under the cache root): opening the
        corpus' cache indexes the keys of every document it holds (1.3 GB and about 15 s for MS MARCO's 8.8M
        passages), which a process that reads the kept corpus matrix never needs."""
        from rankdistill.models.embeddings import _cache_root, encode_texts

        settings = self._encoding()
        settings["cache_dir"] = _cache_root(settings["cache_dir"]) / "queries"
        return encode_texts(texts, **settings, show_progress=show_progress)

    def search(self, queries: Mapping[str, str], k: int = 100, show_progress: bool = False) -> Run:
        """Top-``k`` documents per query as ``{qid: {docid: inner product}}``."""
        check_search(queries, k)
        qids = list(queries)
        if not qids:
            return {}
        if k == 0:
            return {q: {} for q in qids}
        k = min(k, len(self.doc_ids))
        qv = np.ascontiguousarray(self._encode([queries[q] for q in qids], show_progress), dtype=np.float32)
        if self.backend == "faiss":
            scores, idx = self.index.search(qv, k)
        else:
            if self._on_device is None:
                self._on_device = device_matrix(self.vectors, self.config.device)
            scores, idx = exact_top_k(self._on_device, qv, k)
        run: Run = {}
        doc_ids = self.doc_ids
        for q, rows, values in zip(qids, idx.tolist(), scores.tolist()):
            run[q] = {doc_ids[i]: s for i, s in zip(rows, values) if i >= 0}
        return run
