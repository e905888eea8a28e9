"""Datasets through ``ir_datasets`` (``irds:<id>``), for users with network access or a local cache.

``irds:beir/scifact/test`` is a dataset whose one split is ``test``; ``irds:beir/scifact`` offers every
registered sub-dataset with queries (``train``, ``test``) as a split. Documents come from ir_datasets' own
docstore (lazy, indexed), so MS MARCO-sized corpora are never loaded whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from rankdistill.data.dataset import Dataset, Qrels
from rankdistill.data.formats import Doc
from rankdistill.data.runs import Run
from rankdistill.errors import UserInputError
from rankdistill.io import cache_root

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def fetching(ident: str) -> Iterator[None]:
    """Turn ir_datasets' failure to fetch a dataset's files (it downloads them on first use; requests' errors
    are ``OSError``s, and a file with mirrors fails with a ``RuntimeError``) into one :class:`UserInputError`
    line."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # one source failing: its OSError; several: "All download sources failed"
        if isinstance(e, RuntimeError) and not (e.args and e.args[0] == "All download sources failed"):
            raise
        first = e.args[0] if isinstance(e, RuntimeError) else (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first if len(first) <= 160 else first[:157] + "..."
        raise UserInputError(f"ir_datasets could not fetch the files of {ident!r} ({first})",
                             fix="connect to the network for its first use, put its files under ~/.ir_datasets "
                                 "(see ir-datasets.com), or give a local copy (BEIR folder or .toml manifest)"
                             ) from None


def _doc_from(record) -> Doc:
    """A record as ``(id, title, text)``. A record without a ``text`` field takes ir_datasets' own
    ``default_text()`` (the fields its authors read as the document: MS MARCO documents' title and body, not
    their URL), less the title kept apart; without that method, every other string field is joined."""
    fields = record._asdict()
    doc_id = str(fields.pop("doc_id"))
    title = str(fields.pop("title", "") or "")
    text = fields.pop("text", None)
    if text is None and callable(getattr(record, "default_text", None)):
        full = str(record.default_text())
        if title and full.startswith(title):
            text = full[len(title):].strip()
        else:
            title, text = "", full
    if text is None:
        text = " ".join(str(v) for v in fields.values() if isinstance(v, str))
    return Doc(doc_id, title, str(text))


class IrdsDocStore:
    """The :class:`~rankdistill.data.docstore.DocStore` interface over an ir_datasets docstore."""

    def __init__(self, dataset, ident: str, docs_id: str | None = None) -> None:
        self._ds = dataset
        self._ident = ident
        self._docs_id = docs_id or ident
        """The ir_datasets id whose documents these are (``msmarco-passage`` for every split of MS MARCO)."""
        with fetching(ident):
            self._store = dataset.docs_store()

    def __len__(self) -> int:
        with fetching(self._ident):
            count = self._ds.docs_count()
        if count is None:  # some ir_datasets entries (local TSVs) do not know their size
            count = self._count
        return int(count)

    @cached_property
    def _count(self) -> int:
        return sum(1 for _ in self.iter_docs())

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.get(doc_id) is not None

    def known(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Whether each of ``doc_ids`` is in the corpus, asked of ir_datasets' docstore in one ``get_many`` (its
        sorted index looks a batch up together; ``in`` fetched and decoded each document alone, about 20 to
        50 us, 17 minutes or more for the 50M ids of MS MARCO's training groups)."""
        asked = list(dict.fromkeys(d for d in doc_ids if isinstance(d, str)))
        with fetching(self._ident):
            found = self._store.get_many(asked) if asked else {}
        return np.fromiter((isinstance(d, str) and d in found for d in doc_ids), dtype=bool, count=len(doc_ids))

    def __getitem__(self, doc_id: str) -> Doc:
        try:
            with fetching(self._ident):
                return _doc_from(self._store.get(doc_id))
        except KeyError:
            raise KeyError(doc_id) from None

    def get(self, doc_id: str) -> Doc | None:
        try:
            return self[doc_id]
        except KeyError:
            return None

    def text(self, doc_id: str) -> str:
        return self[doc_id].full_text

    def ids(self) -> list[str]:
        return list(self)

    def iter_docs(self) -> Iterator[Doc]:
        with fetching(self._ident):
            for record in self._ds.docs_iter():
                yield _doc_from(record)

    def __iter__(self) -> Iterator[str]:
        with fetching(self._ident):
            for record in self._ds.docs_iter():
                yield str(record.doc_id)

    @cached_property
    def dir(self) -> Path | None:
        """A folder for indexes built from this corpus (BM25's, :mod:`rankdistill.retrieval.bm25`), under the
        cache root (``$RANKDISTILL_CACHE``), as a document store keeps them beside its files: named after the
        dataset that owns the documents (``ir_datasets.docs_parent_id``: ``msmarco-passage`` for
        ``msmarco-passage/train/judged`` and ``msmarco-passage/dev/small`` alike, so its splits share one index)
        and its documents file (path, size and modification time), so a corpus whose file changes under the same
        name gets a new one. None where ir_datasets names no documents file (nothing is then kept, and every
        process that opens the corpus indexes it again)."""
        try:
            with fetching(self._ident):
                try:  # force=False: a name for the folder must not fetch the file (MS MARCO's is about 1 GB)
                    source = Path(self._ds.docs_path(force=False))
                except TypeError:  # a handler whose docs_path takes no force
                    source = Path(self._ds.docs_path())
            st = source.stat()  # a file that is not there (only ir_datasets' built docstore kept): None
        except (AttributeError, NotImplementedError, TypeError, OSError, UserInputError) as e:
            logger.debug("irds:%s names no documents file (%s): its indexes are not kept", self._ident, e)
            return None
        key = hashlib.sha1(json.dumps([self._docs_id, str(source.resolve()), st.st_size, st.st_mtime_ns]).encode())
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self._docs_id)
        return cache_root() / "irds" / f"{name}-{key.hexdigest()[:12]}"

    @cached_property
    def mean_doc_length(self) -> float:
        total = n = 0
        for doc in self.iter_docs():
            total += len(doc.title.split()) + len(doc.text.split())
            n += 1
        return total / max(n, 1)


class IrdsDataset(Dataset):
    """A :class:`Dataset` whose parts come from ir_datasets."""

    def __init__(self, ident: str, split_ids: dict[str, str], rel_thresholds: dict[str, int],
                 aliases: dict[str, str] | None = None) -> None:
        super().__init__(name=ident, corpus_path=None, splits={}, source=f"irds:{ident}")  # type: ignore[arg-type]
        self._split_ids = split_ids
        self._thresholds = rel_thresholds
        self._aliases = dict(aliases or {})
        """Other names of a split (``train`` for the one split of ``msmarco-passage/train/judged``): accepted
        wherever a split is, but not listed, so that nothing reads or counts that split twice."""

    def with_absolute_paths(self) -> IrdsDataset:
        """An ir_datasets dataset is named by its id, not by paths: itself."""
        return self

    def split_names(self) -> list[str]:
        return sorted(self._split_ids)

    def _split_name(self, split: str) -> str:
        return self._aliases.get(split, split)

    def _irds(self, split: str):
        import ir_datasets

        split = self._split_name(split)
        if split not in self._split_ids:
            also = f" (also as {', '.join(sorted(self._aliases))})" if self._aliases else ""
            raise UserInputError(f"unknown split {split!r} for irds:{self.name}; known splits: "
                                 f"{', '.join(self.split_names())}{also}", fix="pass one of them with --split")
        return ir_datasets.load(self._split_ids[split])

    @cached_property
    def corpus(self) -> IrdsDocStore:  # type: ignore[override]
        import ir_datasets

        ident = self.name
        ds = ir_datasets.load(ident)
        if not ds.has_docs():
            ident = next(iter(self._split_ids.values()))
            ds = ir_datasets.load(ident)
        try:  # the dataset whose documents these are: one name (and one kept index) for all its sub-datasets
            owner = ir_datasets.docs_parent_id(ident) or ident
        except Exception:  # a handler ir_datasets cannot trace back: the id itself
            owner = ident
        return IrdsDocStore(ds, self.name, docs_id=owner)

    def qrels(self, split: str) -> Qrels:
        split = self._split_name(split)
        key = ("qrels", split)
        if key not in self._cache:
            out: Qrels = {}
            with fetching(self._split_ids.get(split, self.name)):
                for q in self._irds(split).qrels_iter():
                    out.setdefault(str(q.query_id), {})[str(q.doc_id)] = int(q.relevance)
            self._cache[key] = out
        return self._cache[key]

    def all_queries(self, split: str) -> dict[str, str]:
        split = self._split_name(split)
        key = ("queries", split)
        if key not in self._cache:
            out = {}
            with fetching(self._split_ids.get(split, self.name)):
                for q in self._irds(split).queries_iter():
                    fields = q._asdict()
                    text = fields.get("text") or fields.get("title") or ""
                    out[str(q.query_id)] = str(text)
            self._cache[key] = out
        return self._cache[key]

    def queries(self, split: str) -> dict[str, str]:
        return self.all_queries(split)

    def candidates(self, split: str) -> Run | None:
        split = self._split_name(split)
        ds = self._irds(split)
        if not ds.has_scoreddocs():
            return None
        run: Run = {}
        with fetching(self._split_ids[split]):
            for sd in ds.scoreddocs_iter():
                run.setdefault(str(sd.query_id), {})[str(sd.doc_id)] = float(sd.score)
        return run

    def rel_threshold(self, split: str) -> int:
        self._irds(split)
        return self._thresholds.get(self._split_name(split), 1)


_SPLIT_NAMES = ("train", "dev", "validation", "test")
"""Split names that a dataset id naming a subset of one (``msmarco-passage/train/judged``) also answers to."""


def load_irds(ident: str) -> IrdsDataset:
    """Resolve ``ident`` in the ir_datasets registry into a dataset with named splits."""
    try:
        import ir_datasets
    except ImportError as e:  # pragma: no cover - declared dependency
        raise UserInputError("ir_datasets is not installed", fix="pip install ir_datasets") from e
    registry = ir_datasets.registry
    try:
        ds = ir_datasets.load(ident)
    except KeyError:
        raise UserInputError(f"ir_datasets has no dataset {ident!r}",
                             fix="see https://ir-datasets.com for the ids, e.g. irds:beir/scifact/test") from None
    split_ids: dict[str, str] = {}
    aliases: dict[str, str] = {}
    if ds.has_queries():
        own = ident.rsplit("/", 1)[-1]
        split_ids[own] = ident
        # a subset of a conventional split (msmarco-passage/train/judged, .../dev/small) also answers to that
        # split's name, the default --split of mine and train: "judged" alone made `--split train` fail
        for part in ident.split("/")[1:-1]:
            if part in _SPLIT_NAMES and part != own:
                aliases.setdefault(part, own)
    prefix = ident.rstrip("/") + "/"
    for name in list(registry):
        if name.startswith(prefix) and "/" not in name[len(prefix):]:
            try:
                if registry[name].has_queries():
                    split_ids[name[len(prefix):]] = name
            except Exception:
                continue
    if not split_ids:
        raise UserInputError(f"ir_datasets dataset {ident!r} has no queries", fix="name a dataset with queries")
    thresholds = {s: (2 if "trec-dl" in i else 1) for s, i in split_ids.items()}
    aliases = {a: n for a, n in aliases.items() if a not in split_ids}  # a real split of that name comes first
    return IrdsDataset(ident, split_ids, thresholds, aliases)
