"""An indexed, memory-mapped document store built once per corpus file.

The corpus (any supported format, gzipped or not) is streamed once into a cache folder holding
``docs.bin`` (UTF-8 of ``title \\x00 text`` per document), ``offsets.npy`` (int64, n+1 byte offsets, in
corpus order), ``ids.npy`` (fixed-width byte strings, sorted) and ``order.npy`` (int64, corpus position of
each sorted id). Lookups are a binary search plus a slice of a memory map, so an 8.8M-passage corpus needs
a few hundred MB of resident memory rather than tens of GB. The folder is keyed by the corpus path, size and
modification time, built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from rankdistill.data.formats import Doc, iter_corpus
from rankdistill.errors import UserInputError
from rankdistill.io import cache_root, require_file, seal_folder

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOOKUP_BATCH = 1_000_000
"""Document ids looked up together by :func:`unknown_ids`."""

FORMAT_VERSION = 1


def _store_key(path: Path) -> str:
    st = path.stat()
    raw = f"{FORMAT_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def build_store(corpus: Path, out: Path) -> None:
    """Stream ``corpus`` into the store files under ``out`` (which must not exist)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        offsets = array("q", [0])
        ids: list[bytes] = []
        lines = array("q")
        total_words = 0
        with open(tmp / "docs.bin", "wb") as fh:
            pos = 0
            bar = tqdm(iter_corpus(corpus), desc=f"indexing {corpus.name}", unit=" docs", mininterval=1.0,
                       disable=None, leave=False)
            for n, doc in bar:
                data = f"{doc.title}\x00{doc.text}".encode()
                fh.write(data)
                pos += len(data)
                offsets.append(pos)
                ids.append(doc.doc_id.encode())
                lines.append(n)
                total_words += len(doc.text.split()) + len(doc.title.split())
        if not ids:
            raise UserInputError("corpus holds no documents", path=corpus)
        id_arr = np.array(ids, dtype=bytes)
        del ids
        order = np.argsort(id_arr, kind="stable")
        sorted_ids = id_arr[order]
        dup = np.nonzero(sorted_ids[1:] == sorted_ids[:-1])[0]
        if dup.size:
            i = int(dup[0])
            a, b = int(order[i]), int(order[i + 1])
            raise UserInputError(
                f"duplicate document id {sorted_ids[i].decode()!r} (lines {lines[a]} and {lines[b]}); "
                f"{dup.size} duplicate(s) in all", path=corpus, line=int(lines[b]),
                fix="document ids must be unique")
        np.save(tmp / "offsets.npy", np.frombuffer(offsets, dtype=np.int64))
        np.save(tmp / "ids.npy", sorted_ids)
        np.save(tmp / "order.npy", order.astype(np.int64))
        meta = {"version": FORMAT_VERSION, "corpus": str(corpus.resolve()), "count": len(order),
                "total_words": total_words}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        seal_folder(tmp)
        try:
            os.replace(tmp, out)
        except OSError:
            # another process finished the same store first; keep theirs
            if not (out / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _mapped(path: Path) -> np.ndarray:
    """A saved array, memory-mapped, as a plain ndarray (the map stays alive as its base)."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


class DocStore:
    """Read-only mapping ``doc_id -> Doc`` over a corpus file, backed by memory-mapped index files.

    Use :meth:`text` for what models see (title and text), :meth:`ids` for corpus order.
    """

    def __init__(self, corpus: str | Path, cache_dir: str | Path | None = None) -> None:
        self.corpus = require_file(corpus, "corpus file")
        root = Path(cache_dir) if cache_dir is not None else cache_root() / "docstore"
        root.mkdir(parents=True, exist_ok=True)
        self.dir = root / _store_key(self.corpus)
        if not (self.dir / "meta.json").exists():
            logger.info("indexing corpus %s (once; cached in %s)", self.corpus, self.dir)
            build_store(self.corpus, self.dir)
        self.meta = json.loads((self.dir / "meta.json").read_text())
        # plain arrays over the maps: each scalar or slice of an np.memmap makes a memmap object, a third of the
        # cost of looking one document up (about 30 us)
        self._offsets = _mapped(self.dir / "offsets.npy")
        self._ids = _mapped(self.dir / "ids.npy")
        self._order = _mapped(self.dir / "order.npy")
        self._data = np.memmap(self.dir / "docs.bin", dtype=np.uint8, mode="r").view(np.ndarray) \
            if self._offsets[-1] > 0 else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return int(self._order.shape[0])

    @property
    def mean_doc_length(self) -> float:
        """Mean number of whitespace-separated words (title and text)."""
        return self.meta["total_words"] / max(len(self), 1)

    def _position(self, doc_id: str) -> int | None:
        raw = doc_id.encode()
        if len(raw) > self._ids.dtype.itemsize:
            return None
        i = int(self._ids.searchsorted(raw))
        if i < len(self._ids) and self._ids[i] == raw:
            return int(self._order[i])
        return None

    def positions(self, doc_ids: Sequence[str]) -> np.ndarray:
        """The corpus positions of ``doc_ids`` (-1 where an id is not in the corpus), found together: one sorted
        search of the batch, where ``in`` costs about 10 us an id (8 minutes for MS MARCO's 50M pool pairs)."""
        out = np.full(len(doc_ids), -1, dtype=np.int64)
        size = self._ids.dtype.itemsize
        encoded = [d.encode() if isinstance(d, str) else None for d in doc_ids]
        fit = np.array([e is not None and len(e) <= size for e in encoded], dtype=bool)
        if not len(self._ids) or not fit.any():
            return out
        rows = np.flatnonzero(fit)
        keys = np.array([encoded[i] for i in rows], dtype=self._ids.dtype)
        found = np.searchsorted(self._ids, keys)
        at = np.minimum(found, len(self._ids) - 1)
        hit = (found < len(self._ids)) & (self._ids[at] == keys)
        out[rows[hit]] = self._order[at[hit]]
        return out

    def known(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Whether each of ``doc_ids`` is in the corpus, found together (:meth:`positions`)."""
        return self.positions(doc_ids) >= 0

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self._position(doc_id) is not None

    def _doc_at(self, pos: int, doc_id: str | None = None) -> Doc:
        start, end = self._offsets[pos:pos + 2].tolist()
        raw = self._data[start:end].tobytes().decode("utf-8")
        title, _, text = raw.partition("\x00")
        return Doc(self.id_at(pos) if doc_id is None else doc_id, title, text)

    def id_at(self, pos: int) -> str:
        """The id of the document at corpus position ``pos``."""
        return self._id_by_pos[pos]

    @property
    def _id_by_pos(self) -> np.ndarray:
        # inverse permutation, built lazily: corpus-order ids
        if not hasattr(self, "_ids_in_order"):
            arr = np.empty(len(self), dtype=self._ids.dtype)
            arr[np.asarray(self._order)] = self._ids
            self._ids_in_order = arr
        return _DecodedView(self._ids_in_order)  # type: ignore[return-value]

    def __getitem__(self, doc_id: str) -> Doc:
        pos = self._position(doc_id) if isinstance(doc_id, str) else None  # ids are strings, as in a dict
        if pos is None:
            raise KeyError(doc_id)
        return self._doc_at(pos, doc_id)

    def get(self, doc_id: str) -> Doc | None:
        with contextlib.suppress(KeyError):
            return self[doc_id]
        return None

    def text(self, doc_id: str) -> str:
        """Title and text joined by a space: what retrievers index and models read."""
        return self[doc_id].full_text

    def ids(self) -> list[str]:
        """All document ids in corpus order: a new list each call, of strings decoded once per store (a mining
        process asks three times, for BM25, dense retrieval and random draws; each decoding of MS MARCO's 8.8M
        ids took 0.6 GB and seconds)."""
        if not hasattr(self, "_decoded_ids"):
            self._decoded_ids = tuple(b.decode() for b in self._id_by_pos.array)
        return list(self._decoded_ids)

    def iter_docs(self) -> Iterator[Doc]:
        """All documents in corpus order (streamed from the memory map)."""
        for pos in range(len(self)):
            yield self._doc_at(pos)

    def __iter__(self) -> Iterator[str]:
        for b in self._id_by_pos.array:
            yield b.decode()


class _DecodedView:
    """Index a byte-string array and get ``str`` back."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __getitem__(self, i: int) -> str:
        return bytes(self.array[i]).decode()


def with_unknown_ids(items: Iterable[T], ids_of: Callable[[T], Sequence[str]], corpus: Container[str],
                     batch_ids: int | None = None) -> Iterator[tuple[T, list[str]]]:
    """Each item with the ids among ``ids_of(item)`` that are not in ``corpus`` (in their order), for many small
    lists of ids (a groups file's groups): a corpus with a ``known(ids)`` mask (:func:`unknown_ids`) looks up
    ``batch_ids`` (default :data:`LOOKUP_BATCH`) ids of many items at once (a lookup per group of 100 ids cost
    about 4 us an id, 3.5 minutes for MS MARCO's 500k groups), so up to that many ids' items are read ahead: a
    caller that may stop early asks for smaller batches."""
    batch_ids = LOOKUP_BATCH if batch_ids is None else max(1, batch_ids)
    known = getattr(corpus, "known", None)
    if known is None:
        for item in items:
            yield item, [d for d in ids_of(item) if d not in corpus]
        return
    it = iter(items)
    while True:
        batch: list[tuple[T, int]] = []
        ids: list[str] = []
        for item in it:
            own = ids_of(item)
            batch.append((item, len(own)))
            ids.extend(own)
            if len(ids) >= batch_ids:
                break
        if not batch:
            return
        unknown = ~known(ids)
        start = 0
        for item, n in batch:
            yield item, [ids[start + i] for i in np.flatnonzero(unknown[start:start + n]).tolist()]
            start += n


def unknown_ids(corpus: Container[str], doc_ids: Iterable[str]) -> list[str]:
    """The ids among ``doc_ids`` that are not in ``corpus``, in their order (repeats kept): batch lookups of
    :data:`LOOKUP_BATCH` ids for a corpus with a ``known(ids)`` mask (a :class:`DocStore`, an ir_datasets
    corpus), ``in`` for any other."""
    known = getattr(corpus, "known", None)
    if known is None:
        return [d for d in doc_ids if d not in corpus]
    out: list[str] = []
    it = iter(doc_ids)
    while batch := list(itertools.islice(it, LOOKUP_BATCH)):
        out.extend(batch[i] for i in np.flatnonzero(~known(batch)).tolist())
    return out
