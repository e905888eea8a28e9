"""What a strategy may use: the config, the dataset, a teacher, and first stages built once and shared."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rankdistill.data.docstore import unknown_ids
from rankdistill.data.runs import Run, ranked, read_run
from rankdistill.errors import UserInputError
from rankdistill.io import iter_lines, require_file
from rankdistill.mining.base import MiningConfig, MiningQuery

logger = logging.getLogger(__name__)


@dataclass
class MiningContext:
    """Shared state of one mining run. ``teacher`` is a :class:`~rankdistill.teachers.engine.TeacherScores`
    (or ``None``); first stages are built on first use and cached here."""

    config: MiningConfig
    dataset: Any
    split: str
    teacher: Any = None
    show_progress: bool = True
    _retrievers: dict[str, Any] = field(default_factory=dict, repr=False)
    _runs: dict[tuple[str, str], Run] = field(default_factory=dict, repr=False)

    @cached_property
    def corpus(self) -> Any:
        return self.dataset.corpus

    @cached_property
    def corpus_ids(self) -> list[str]:
        """All document ids in corpus order (what random draws index into)."""
        return self.corpus.ids()

    def retriever(self, name: str) -> Any:
        """A named first stage: ``bm25`` (bm25s, k1 1.2, b 0.75) or ``dense`` (FAISS over ``config.encoder``)."""
        if name not in self._retrievers:
            if name == "bm25":
                from rankdistill.retrieval.bm25 import BM25Retriever

                self._retrievers[name] = BM25Retriever(self.corpus)
            elif name == "dense":
                from rankdistill.retrieval.dense import DenseConfig, DenseRetriever

                c = self.config
                self._retrievers[name] = DenseRetriever(
                    self.corpus, DenseConfig(model=c.encoder, similarity=c.similarity, batch_size=c.encoder_batch_size,
                                             max_length=c.encoder_max_length,
                                             cache_dir=c.embedding_cache), show_progress=self.show_progress,
                    keep_matrix=True)  # mining's encoder is searched again: by each worker, each seed, each run
            else:
                raise UserInputError(f"unknown retriever {name!r}; known: bm25, dense")
        return self._retrievers[name]

    def run_file(self, path: str | Path, option: str) -> Run:
        """A TREC run given with ``option`` (:func:`read_checked_run`), read once: the miner asks a strategy
        for candidates block by block."""
        key = (str(path), option)
        if key not in self._runs:
            self._runs[key] = read_checked_run(path, self.corpus, option)
        return self._runs[key]

    def retrieve(self, name: str, queries: list[MiningQuery], depth: int) -> dict[str, list[str]]:
        """Top-``depth`` rankings (doc ids, best first; ties by doc id) of a named first stage."""
        r = self.retriever(name)
        texts = {q.query_id: q.text for q in queries}
        return rankings(r.search(texts, k=depth, show_progress=self.show_progress), depth)


def rankings(run: Run, depth: int | None = None) -> dict[str, list[str]]:
    """``{qid: [doc ids best first]}`` of a run (score descending, ties by doc id), cut at ``depth``."""
    return {q: [d for d, _ in ranked(docs)][:depth] for q, docs in run.items()}


def read_checked_run(path: str | Path, corpus: Any, option: str) -> Run:
    """Read a TREC run whose documents must all be in the corpus; an unknown one is reported with its line."""
    path = require_file(path, f"{option} run file")
    run = read_run(path)
    unknown = set(unknown_ids(corpus, (d for docs in run.values() for d in docs)))
    if unknown:
        for n, line in iter_lines(path):
            parts = line.split()
            if len(parts) == 6 and parts[2] in unknown:
                raise UserInputError(f"document id {parts[2]!r} is not in the corpus ({len(unknown)} unknown in all)",
                                     path=path, line=n, fix=f"give a {option} run over this dataset's corpus")
    if not run:
        raise UserInputError("the run file is empty", path=path, fix=f"give a TREC run with {option}")
    return run
