"""First-stage retrieval: BM25 (bm25s), dense (FAISS), run files and fusion.

>>> from rankdistill.data import load_dataset                                  # doctest: +SKIP
>>> from rankdistill.retrieval import BM25Retriever                            # doctest: +SKIP
>>> ds = load_dataset("scifact", data_dir="../shared/data")                    # doctest: +SKIP
>>> run = BM25Retriever(ds.corpus).search(ds.queries("test"), k=100)          # doctest: +SKIP
"""

from rankdistill._lazy import lazy_exports

_LAZY = {"BM25Config": "bm25", "BM25Retriever": "bm25", "DenseConfig": "dense", "DenseRetriever": "dense",
         "exact_top_k": "dense", "reciprocal_rank_fusion": "fusion", "rrf_scores": "fusion"}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
