"""BM25 over a document store through the ``bm25s`` library.

Title and text are indexed together; English stop words are removed and tokens stemmed with the Snowball
English stemmer (PyStemmer). Scoring is Lucene's BM25 variant with ``k1 = 1.2`` and ``b = 0.75`` by default
(Robertson & Zaragoza, 2009; the parameters of the paper's BM25 domain and of BEIR's Elasticsearch baseline).
The index is cached beside the document store (for an ir_datasets corpus, under the cache root), so mining and
retrieval over the same corpus build it once.

The top-k is numpy's on every machine. Where JAX is installed, bm25s imports it, runs one JAX top-k at
import and takes its top-k from JAX by default. On a GPU machine whose JAX has CUDA, that first call gave JAX
the GPU and, by JAX's default, 75% of its memory for the rest of the process (seen on an H200: 108 of 143 GB
taken as a study started); it also started JAX's threads, so every later ``fork`` (a data loader's workers)
warned of a possible deadlock; and a JAX top-k can order tied scores differently from numpy's, so a run on such
a machine could differ from one without JAX. :func:`import_bm25s` therefore imports bm25s with JAX hidden from
it (unless JAX is loaded already), and the search asks bm25s for numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rankdistill.data.runs import Run
from rankdistill.errors import check_field_types
from rankdistill.io import bar_on_terminal, seal_folder
from rankdistill.models.tokenize import default_workers
from rankdistill.retrieval.base import check_search

logger = logging.getLogger(__name__)

MIN_QUERIES_PER_THREAD = 64
"""Fewer queries per thread are not worth one."""


def import_bm25s():
    """``bm25s``, imported with JAX hidden from it (see the module's docstring): its optional ``import jax``
    fails while ``sys.modules["jax"]`` is None, so it never loads JAX; the entry is removed right after, so
    other code of the process can still import JAX. Where JAX is loaded already, bm25s finds it (and the
    search still asks for numpy's top-k)."""
    hide = "jax" not in sys.modules and "bm25s" not in sys.modules
    # (while the entry is None, a first `import jax` in another thread fails too; nothing here imports JAX)
    if hide:
        sys.modules["jax"] = None  # type: ignore[assignment]
    try:
        import bm25s
    finally:
        if hide and "jax" in sys.modules and sys.modules["jax"] is None:
            del sys.modules["jax"]
    return bm25s


@dataclass(frozen=True)
class BM25Config:
    """BM25 settings; all of them go into the index cache key."""

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        check_field_types(self)
        check_bm25_parameters(self.k1, self.b)


def check_bm25_parameters(k1: float, b: float, names: tuple[str, str] = ("--k1", "--b"), path=None) -> None:
    """Refuse BM25 parameters outside their meaning: ``k1 >= 0`` (term-frequency saturation) and ``0 <= b <= 1``
    (the share of document-length normalisation; Robertson & Zaragoza 2009)."""
    from rankdistill.errors import UserInputError

    if not 0 <= k1 < math.inf:  # NaN fails too; an infinite k1 makes every score inf - inf
        raise UserInputError(f"BM25 {names[0]} must be a finite number, 0 or more, got {k1!r}", path=path,
                             fix="the usual value is 1.2")
    if not 0 <= b <= 1:
        raise UserInputError(f"BM25 {names[1]} must be between 0 and 1, got {b!r}", path=path,
                             fix="the usual value is 0.75")


def _stemmer(name: str | None):
    if not name:
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


class BM25Retriever:
    """A bm25s index over a corpus; ``search`` returns a :data:`~rankdistill.data.runs.Run`.

    Args:
        corpus: a :class:`~rankdistill.data.docstore.DocStore` (or anything with ``ids()`` and ``text()``).
        config: BM25 parameters.
        cache: cache the index in the corpus' folder (a document store's, or an ir_datasets corpus' under the
            cache root), when it has one.
    """

    def __init__(self, corpus, config: BM25Config | None = None, cache: bool = True) -> None:
        bm25s = import_bm25s()

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on its own logger

        self.config = config or BM25Config()
        self._stem = _stemmer(self.config.stemmer)
        self.doc_ids = corpus.ids()
        cache_dir = self._cache_dir(corpus) if cache else None
        self.cached = False
        """Whether the index is kept on disk, for the next process to load: beside a document store's files, or
        for an ir_datasets corpus under the cache root (:attr:`~rankdistill.data.irds.IrdsDocStore.dir`); a
        corpus with neither, or a folder that could not be written, is indexed again by every process."""
        if cache_dir is not None and (cache_dir / "params.index.json").exists():
            # memory-mapped: the workers of a fanned-out mining share one copy (2-3 GB for MS MARCO's passages)
            self.index = bm25s.BM25.load(str(cache_dir), show_progress=False, mmap=True)
            kept = self.index.scores.get("num_docs")
            if kept == len(self.doc_ids):
                self.cached = True
                logger.debug("loaded BM25 index from %s", cache_dir)
                return
            # an index of another corpus under this name would score the wrong documents: built again here
            logger.warning("the BM25 index in %s holds %s documents, the corpus %d: indexing it again", cache_dir,
                           kept, len(self.doc_ids))
            cache_dir = None
        texts = (corpus.text(d) for d in self.doc_ids)
        tokens = bm25s.tokenize(list(texts), stopwords=self.config.stopwords, stemmer=self._stem,
                                show_progress=False)
        self.index = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self.index.index(tokens, show_progress=False)
        if cache_dir is not None:
            self.cached = self._save(cache_dir)

    def _cache_dir(self, corpus) -> Path | None:
        base = getattr(corpus, "dir", None)
        if base is None:
            return None
        key = hashlib.sha1(json.dumps(asdict(self.config), sort_keys=True).encode()).hexdigest()[:12]
        return Path(base) / f"bm25-{key}"

    def _save(self, target: Path) -> bool:
        """Keep the index in ``target``; whether it is there now (another process may have put it there first).
        Only a speed-up: where it cannot be written, the index in memory serves this process, and a warning
        says that the next one indexes the corpus again."""
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # an ir_datasets corpus' folder in the cache
            tmp = Path(tempfile.mkdtemp(prefix=".bm25-", dir=target.parent))
            self.index.save(str(tmp), show_progress=False)
            seal_folder(tmp)
            os.replace(tmp, target)
        except OSError as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "params.index.json").exists():  # else another process kept it first
                logger.warning("could not keep the BM25 index in %s (%s); the next process indexes the corpus "
                               "again", target, e.strerror or e)
        return (target / "params.index.json").exists()

    def search(self, queries: Mapping[str, str], k: int = 100, show_progress: bool = False) -> Run:
        """Top-``k`` documents per query as ``{qid: {docid: score}}`` (queries with no usable term get none)."""
        bm25s = import_bm25s()

        check_search(queries, k)
        qids = list(queries)
        if not qids:
            return {}
        k = min(k, len(self.doc_ids))
        tokens = bm25s.tokenize([queries[q] for q in qids], stopwords=self.config.stopwords, stemmer=self._stem,
                                return_ids=False, show_progress=False)
        vocab = self.index.vocab_dict
        tokens = [[t for t in toks if t in vocab] for toks in tokens]
        run: Run = {}
        usable = [i for i, toks in enumerate(tokens) if toks]
        if len(usable) < len(qids):
            logger.warning("%d queries have no term in the index and get no BM25 results",
                           len(qids) - len(usable))
        if not usable:
            return {q: {} for q in qids}
        # queries are scored independently, so threads change only the speed (numpy releases the GIL in the
        # scoring: 1.3x on 2 cores for 1,000 queries against 1M passages), not the results
        threads = max(1, min(default_workers(), len(usable) // MIN_QUERIES_PER_THREAD))
        docs, scores = self.index.retrieve([tokens[i] for i in usable], k=k, n_threads=threads,
                                           show_progress=bar_on_terminal(show_progress), backend_selection="numpy")
        doc_ids = self.doc_ids
        for i, rows, values in zip(usable, np.asarray(docs).tolist(), np.asarray(scores).tolist()):
            run[qids[i]] = {doc_ids[idx]: score for idx, score in zip(rows, values) if score > 0}
        for q in qids:
            run.setdefault(q, {})
        return run
