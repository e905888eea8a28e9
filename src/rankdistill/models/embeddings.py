"""Dense text embeddings with an on-disk cache keyed by model and text hash.

Encoding goes through ``sentence_transformers.SentenceTransformer`` (length-sorted batches, the model's own
pooling; a plain Hugging Face encoder directory gets mean pooling). The cache lives in
``<cache_dir>/<model key>/`` as append-only shards (``shard-NNNNN.npy`` with the vectors and
``shard-NNNNN.keys`` with the SHA-1 of each text), each written atomically, so an interrupted encoding keeps
every finished shard and re-mining or re-diagnosing never re-encodes a text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rankdistill.io import atomic_path, bar_on_terminal
from rankdistill.models import model_id, resolve_model, weights_digest

logger = logging.getLogger(__name__)

SHARD_SIZE = 8192
"""Texts encoded and saved at a time: what a killed encoding can lose (at most a few minutes of a CPU, seconds
of a GPU); the length sort of sentence-transformers still fills its batches within a shard."""


def default_cache_dir() -> Path:
    """``$RANKDISTILL_CACHE/embeddings`` or ``~/.cache/rankdistill/embeddings``."""
    from rankdistill.io import cache_root

    return cache_root() / "embeddings"


def _cache_root(cache_dir: str | Path | bool | None) -> Path:
    """The cache folder a ``cache_dir`` argument names (``None`` or ``True``: :func:`default_cache_dir`)."""
    return default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def model_key(model: str | None, max_length: int | None, normalize: bool) -> str:
    """Identify a model's embedding space: its id, the digest of its files (:func:`weights_digest`; sizes and
    times could stay the same for other weights), max length and normalisation."""
    parts = [model_id(model), str(max_length), str(normalize), str(weights_digest(model))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


class EmbeddingCache:
    """Append-only store of text embeddings for one model key.

    The index (text key -> shard and row) is read from the shards' key files once and then kept up to date
    incrementally: :meth:`refresh` reads only the shards written since it last looked, by this process or
    another. :func:`open_cache` keeps one cache per folder and process, so code that encodes chunk by chunk
    (a bi-encoder teacher, the diagnostics) does not re-read millions of keys for every chunk.
    Where two shards hold the same text, the lower-numbered one is read, as a fresh process would.
    """

    def __init__(self, root: str | Path, key: str, meta: dict | None = None) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        if meta is not None and not (self.dir / "meta.json").exists():
            with atomic_path(self.dir / "meta.json") as tmp:
                tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._index: dict[str, int] = {}  # text key -> shard << 32 | row
        self._seen: dict[int, tuple[int, int, int, int]] = {}  # shard -> its keys file's identity when read
        self._lock = threading.Lock()
        self.refresh()

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _put(self, n: int, keys: Sequence[str]) -> None:
        index = self._index
        for row, k in enumerate(keys):
            code = index.get(k)
            if code is None or code >> 32 > n:
                index[k] = n << 32 | row

    def refresh(self) -> int:
        """Index the shards written since the last look; returns how many shards were new. A shard read
        before that is gone or rewritten (the folder was cleared) makes the whole index be read again."""
        with self._lock:
            found: dict[int, Path] = {}
            for keys_file in self.dir.glob("shard-*.keys"):
                found[int(keys_file.stem.split("-")[1])] = keys_file
            if any(n not in found or _identity(found[n]) != ident for n, ident in self._seen.items()):
                self._index, self._seen = {}, {}
            new = 0
            for n in sorted(set(found) - set(self._seen)):
                if not (self.dir / f"shard-{n:05d}.npy").exists():  # the keys file is written last
                    continue
                ident = _identity(found[n])
                self._put(n, found[n].read_text().split())
                self._seen[n] = ident
                new += 1
            return new

    def _shard(self, n: int) -> np.ndarray:
        """Shard ``n``, memory-mapped: the caller gathers its rows and lets it go. The maps are not kept: each
        holds a file descriptor, and MS MARCO's 8.8M passages make over a thousand shards, past the usual limit
        of 1,024 open files."""
        return np.load(self.dir / f"shard-{n:05d}.npy", mmap_mode="r")

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The vectors of ``keys`` in order, ``float32 [len(keys), dim]``; gathered shard by shard."""
        if len(keys) == 0:
            return np.asarray([], dtype=np.float32)
        codes = np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))
        shard_of, row_of = codes >> 32, codes & 0xFFFFFFFF
        order = np.argsort(shard_of, kind="stable")
        shards, starts = np.unique(shard_of[order], return_index=True)
        ends = [*starts[1:], len(order)]
        out: np.ndarray | None = None
        for n, a, b in zip(shards, starts, ends):
            sel = order[a:b]
            vecs = self._shard(int(n))[row_of[sel]]
            if out is None:
                out = np.empty((len(keys), vecs.shape[1]), dtype=np.float32)
            out[sel] = vecs
        assert out is not None
        return out

    def _claim_shard(self) -> int:
        """A shard number no other writer has: ``shard-N.claim`` is created exclusively (two processes adding
        to one model's cache, e.g. cells embedding different splits, took the same number and overwrote each
        other's vectors, so a text could get another text's embedding)."""
        taken = [int(p.name.split("-")[1].split(".")[0]) for p in self.dir.glob("shard-*.*")]
        n = max(taken, default=-1) + 1
        while True:
            try:
                os.close(os.open(self.dir / f"shard-{n:05d}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return n
            except FileExistsError:
                n += 1

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        n = self._claim_shard()
        with atomic_path(self.dir / f"shard-{n:05d}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(vectors, dtype=np.float32))
        # the keys file is written last: a shard counts only once both exist
        keys_file = self.dir / f"shard-{n:05d}.keys"
        with atomic_path(keys_file) as tmp:
            tmp.write_text("\n".join(keys) + "\n")
        with self._lock:
            self._put(n, keys)
            self._seen[n] = _identity(keys_file)


def _identity(path: Path) -> tuple[int, int, int, int]:
    """A keys file as it was read: a cleared folder can give a new shard the old one's number, inode (reused)
    and size (as many keys), but not its modification and change times."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


_CACHES: dict[Path, EmbeddingCache] = {}


def open_cache(root: str | Path, key: str, meta: dict | None = None) -> EmbeddingCache:
    """The process's one :class:`EmbeddingCache` of ``root/key``, brought up to date with :meth:`refresh`."""
    folder = (Path(root) / key).resolve()
    cache = _CACHES.get(folder)
    if cache is None or not folder.is_dir():
        cache = _CACHES[folder] = EmbeddingCache(root, key, meta)
    else:
        cache.refresh()
    return cache


_MODELS: dict[tuple[str, str | None], object] = {}
_OWN_MAX_LENGTH: dict[tuple[str, str | None], int] = {}


def load_sentence_transformer(model: str | None = None, device: str | None = None, max_length: int | None = None):
    """Load (and memoise) a ``SentenceTransformer`` from a name or directory, offline for the default."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model(model)
    key = (resolved, device)
    if key not in _MODELS:
        from rankdistill.models.backbone import model_load_errors, quiet_transformers

        with model_load_errors(model), quiet_transformers():
            _MODELS[key] = SentenceTransformer(resolved, device=device)
        _OWN_MAX_LENGTH[key] = _MODELS[key].max_seq_length  # type: ignore[attr-defined]
    st = _MODELS[key]
    # the memoised model is shared: every call sets the limit it asks for (None = the model's own), so an
    # earlier caller's limit never leaks into a later one
    st.max_seq_length = max_length if max_length is not None else _OWN_MAX_LENGTH[key]  # type: ignore[attr-defined]
    return st


def encode_corpus(corpus, model: str | None = None, *, batch_size: int = 64, max_length: int | None = None,
                  normalize: bool = False, device: str | None = None, cache_dir: str | Path | bool | None = None,
                  show_progress: bool = False, keep_matrix: bool = False) -> np.ndarray:
    """The embedding of every document of ``corpus`` in corpus order (``corpus.ids()``), as
    :func:`encode_texts` gives them.

    ``keep_matrix``: for a :class:`~rankdistill.data.docstore.DocStore` with a cache, also keep the whole matrix
    beside the model's shards (``corpus-<store key>.npy``; the store's key names the corpus file, its size and
    time) and read it back from there. Finding each document's vector otherwise reads and hashes every text
    (about 20 us a document, three minutes for MS MARCO's 8.8M passages), again in each process that searches
    the corpus, such as every worker of a fanned-out mining. It is for a first stage's encoder, searched again
    and again; a student evaluated once would only store its vectors twice. The matrix takes as much disk as
    the shards that hold the corpus (13.5 GB for MS MARCO at 384 dimensions); where it cannot be written, a
    warning says so and the vectors are returned all the same.
    """
    from rankdistill.data.docstore import DocStore

    store = isinstance(corpus, DocStore)
    path = None
    if keep_matrix and store and cache_dir is not False:
        path = _cache_root(cache_dir) / model_key(model, max_length, normalize) / f"corpus-{corpus.dir.name}.npy"
        if path.is_file():  # mapped read-only: the processes searching it share the pages (13.5 GB for MS MARCO)
            matrix = np.load(path, mmap_mode="r")
            if matrix.shape[0] == len(corpus):
                return matrix
    # a store streams its documents in corpus order, at half the cost of looking each id up
    texts = [doc.full_text for doc in corpus.iter_docs()] if store else [corpus.text(d) for d in corpus.ids()]
    vectors = encode_texts(texts, model, batch_size=batch_size, max_length=max_length, normalize=normalize,
                           device=device, cache_dir=cache_dir, show_progress=show_progress)
    if path is not None:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, vectors)
        except OSError as e:  # only a speed-up: the vectors are in the shards
            logger.warning("could not keep the corpus' embedding matrix in %s (%s); the next search reads the "
                           "corpus again", path, e.strerror or e)
    return vectors


def encode_texts(texts: Sequence[str], model: str | None = None, *, batch_size: int = 64,
                 max_length: int | None = None, normalize: bool = False, device: str | None = None,
                 cache_dir: str | Path | bool | None = None, show_progress: bool = False) -> np.ndarray:
    """Embed ``texts`` with ``model`` (default all-MiniLM-L6-v2), reusing cached vectors.

    Args:
        texts: the texts; duplicates are encoded once.
        model: a model name or directory (``None`` = the bundled default encoder).
        max_length: token limit (``None`` = the model's own).
        normalize: L2-normalise the vectors (then dot product = cosine similarity).
        cache_dir: cache root; ``None`` = :func:`default_cache_dir`, ``False`` = no cache.

    Returns:
        ``float32`` array of shape ``[len(texts), dim]`` (``[0, dim]`` for no text).
    """
    if isinstance(texts, str):  # would be embedded character by character
        raise TypeError("texts must be a sequence of strings, not one string: pass [text]")
    if len(texts) == 0:
        st = load_sentence_transformer(model, device=device, max_length=max_length)
        dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension  # renamed in ST 5
        return np.empty((0, dim()), dtype=np.float32)
    keys = [text_key(t) for t in texts]
    cache = None
    if cache_dir is not False:
        cache = open_cache(_cache_root(cache_dir), model_key(model, max_length, normalize),
                           meta={"model": model_id(model), "max_length": max_length, "normalize": normalize})
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if (cache is None or k not in cache) and k not in todo:
            todo[k] = t
    fresh: dict[str, np.ndarray] = {}
    if todo:
        from tqdm.auto import tqdm

        st = load_sentence_transformer(model, device=device, max_length=max_length)
        todo_keys = list(todo)
        # one bar over every shard (sentence-transformers' own would start again at each), on a terminal only
        with tqdm(total=len(todo_keys), desc="encoding", unit="text", unit_scale=True, dynamic_ncols=True,
                  disable=not bar_on_terminal(show_progress)) as bar:
            for start in range(0, len(todo_keys), SHARD_SIZE):
                chunk = todo_keys[start:start + SHARD_SIZE]
                vecs = st.encode([todo[k] for k in chunk], batch_size=batch_size,  # type: ignore[attr-defined]
                                 convert_to_numpy=True, normalize_embeddings=normalize, show_progress_bar=False)
                vecs = np.asarray(vecs, dtype=np.float32)
                if cache is not None:
                    cache.add(chunk, vecs)  # saved now: a killed encoding keeps every finished shard
                else:
                    fresh.update(zip(chunk, vecs))
                bar.update(len(chunk))
        logger.info("encoded %d new texts with %s", len(todo), model_id(model))
    if cache is not None:
        return cache.get(keys)
    return np.asarray([fresh[k] for k in keys], dtype=np.float32)
