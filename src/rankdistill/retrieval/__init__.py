"""First-stage retrieval: BM25 (bm25s), dense (FAISS), run files and fusion."""
