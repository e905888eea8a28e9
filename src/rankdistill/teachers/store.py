"""The score store: teacher scores keyed by (teacher id, query id, doc id), in one SQLite file.

Why SQLite: every committed transaction is durable and atomic (a ``kill -9`` loses at most the scores not
yet committed and never corrupts what was written), readers see a consistent snapshot while a writer appends
(WAL journal; a rollback journal on a network filesystem), and a lookup of millions of pairs needs no custom
index code. Each (teacher, query, doc) is
stored once; writing it again keeps the first value, so re-running a scoring job is idempotent.

Besides the scores, the store records per teacher how its scores were made (``teacher_info``: model, score
space, max length, ...), so that a later run with other settings under the same id is refused rather than
silently mixed in.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from rankdistill.data.runs import Run, run_tag, write_run_by_query
from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, iter_object_items, network_filesystem, open_binary

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    teacher TEXT NOT NULL, query_id TEXT NOT NULL, doc_id TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (teacher, query_id, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS teachers (teacher TEXT PRIMARY KEY, info TEXT NOT NULL);
"""

_PUT_CHUNK = 50_000
_TEMP_TABLES = itertools.count()


class ScoreStore:
    """Persistent, incremental, crash-safe teacher scores.

    >>> store = ScoreStore("scores.db")                                   # doctest: +SKIP
    >>> store.put("ce", [("q1", "d1", 3.2), ("q1", "d2", -1.0)])          # doctest: +SKIP
    >>> store.scores("ce")                                                # doctest: +SKIP
    {'q1': {'d1': 3.2, 'd2': -1.0}}

    Open it with ``readonly=True`` to read while another process writes (e.g. to watch progress).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if self.path.exists() and not self.path.is_file():
            raise UserInputError("score store path is not a file", path=self.path,
                                 fix="give a file name such as scores.db")
        try:
            if readonly:
                if not self.path.is_file():
                    raise UserInputError("score store not found", path=self.path,
                                         fix="create it with `rankdistill score`")
                uri = f"file:{self.path.resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=60)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=60)
                network = network_filesystem(self.path.parent)
                if network:  # SQLite: WAL "does not work over a network filesystem" (shared-memory index)
                    logger.info("%s is on a network filesystem (%s): the store uses a rollback journal, not WAL",
                                self.path, network)
                self._db.execute(f"PRAGMA journal_mode={'DELETE' if network else 'WAL'}")
                # WAL + NORMAL: a committed transaction survives the process being killed; only a power cut
                # may lose the last few commits, and never corrupts the file.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.commit()
            self._db.execute("SELECT 1 FROM scores LIMIT 1")
        except sqlite3.DatabaseError as e:
            raise UserInputError(f"not a rankdistill score store ({e})", path=self.path,
                                 fix="give a store written by `rankdistill score`"
                                 + ("" if readonly else ", or a new file name")) from None

    # -- writing -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's write lock for a check-then-write (``BEGIN IMMEDIATE``): other writers wait, so two
        jobs sharing a store cannot both find a teacher id free and record it with different settings. Writes
        inside commit with the block."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.rollback()
            raise
        if self._db.in_transaction:
            self._db.commit()

    def set_teacher_info(self, teacher: str, info: dict) -> None:
        """Record how a teacher's scores were made (model, score space, max length, ...)."""
        with self._db:
            self._set_info(teacher, info)

    def _set_info(self, teacher: str, info: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO teachers VALUES (?, ?)", (teacher, json.dumps(info, sort_keys=True)))

    def put(self, teacher: str, rows: Iterable[tuple[str, str, float]]) -> int:
        """Store ``(query_id, doc_id, score)`` rows in one transaction; returns how many were new.

        NaN or infinite scores are refused (nothing of the batch is written) with the offending pairs named.
        """
        before = self._db.total_changes
        with self._db:
            self._insert(teacher, rows)
        return self._db.total_changes - before

    def _insert(self, teacher: str, rows: Iterable[tuple[str, str, float]]) -> None:
        """:meth:`put` within the caller's transaction."""
        if not teacher:
            raise ValueError("teacher id must be a non-empty string")
        batch = [(teacher, str(q), str(d), float(s)) for q, d, s in rows]
        bad = [(q, d) for _, q, d, s in batch if not math.isfinite(s)]
        if bad:
            shown = ", ".join(f"({q}, {d})" for q, d in bad[:5])
            raise UserInputError(f"teacher {teacher!r} gave {len(bad)} non-finite score(s), e.g. {shown}; "
                                 "nothing of this batch was stored",
                                 fix="check the model and its inputs (max length, dtype)")
        self._db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?)", batch)

    def keep_only(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Delete the scores (of every teacher) whose ``(query_id, doc_id)`` is not in ``pairs`` and compact the
        file; returns how many were deleted. A study's labelling store keeps the pairs its groups train on,
        not everything the teacher scored while mining."""
        with self._pairs_table(pairs) as keep, self._db:
            removed = self._db.execute(
                f"DELETE FROM scores WHERE NOT EXISTS (SELECT 1 FROM {keep} AS k WHERE k.query_id = scores.query_id "
                "AND k.doc_id = scores.doc_id)").rowcount
        if removed:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(removed)

    def import_json_gz(self, path: str | Path, teacher: str, info: dict | None = None) -> int:
        """Load the paper's teacher file (``{qid: {docid: score}}``, JSON, gzipped or not) under ``teacher``.

        The file is read a query at a time (:func:`~rankdistill.io.iter_object_items`) and stored in one
        transaction: malformed content anywhere (or a query id given twice) raises :class:`UserInputError`
        naming the file, and nothing of it, nor ``info``, is stored. Returns the number of new scores.
        """
        seen: set[str] = set()
        batch: list[tuple[str, str, float]] = []
        with self._db, contextlib.closing(_teacher_file_items(path)) as items, \
                tqdm(desc=f"importing {Path(path).name}", unit="query", disable=None, mininterval=1.0) as bar:
            if info is not None:
                self._set_info(teacher, info)
            before = self._db.total_changes
            for qid, docs in items:
                if qid in seen:
                    raise UserInputError(f"query {qid!r} is given twice", path=path,
                                         fix="give each query's scores once, in one object {docid: score}")
                seen.add(qid)
                if not isinstance(docs, dict):
                    raise UserInputError(f"query {qid!r}: expected an object {{docid: score}}", path=path)
                for did, score in docs.items():
                    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                        what = "is not a number" if not isinstance(score, (int, float)) or isinstance(score, bool) \
                            else "is not finite"
                        raise UserInputError(f"query {qid!r}, doc {did!r}: score {score!r} {what}", path=path,
                                             fix="give every score as a finite number")
                    batch.append((qid, did, float(score)))
                if len(batch) >= _PUT_CHUNK:
                    self._insert(teacher, batch)
                    batch = []
                bar.update()
            self._insert(teacher, batch)
        return self._db.total_changes - before

    # -- reading -------------------------------------------------------------------------------------
    def teachers(self) -> list[str]:
        """Teacher ids present in the store (with scores or recorded info)."""
        found = {r[0] for r in self._db.execute("SELECT teacher FROM teachers")}
        # the teachers with scores, one index seek each: SELECT DISTINCT read the whole table (seconds at 40M
        # rows, and this runs several times per scoring call)
        last = ""
        while (row := self._db.execute("SELECT MIN(teacher) FROM scores WHERE teacher > ?", (last,)).fetchone()
               )[0] is not None:
            last = row[0]
            found.add(last)
        return sorted(found)

    def resolve_teacher(self, teacher: str | None = None) -> str:
        """Return ``teacher`` if present, or the only teacher when ``None``; else a clear error."""
        known = self.teachers()
        if teacher is None:
            if len(known) == 1:
                return known[0]
            if not known:
                raise UserInputError("the score store holds no scores", path=self.path,
                                     fix="run `rankdistill score` first")
            raise UserInputError(f"the score store holds several teachers ({', '.join(known)})",
                                 path=self.path, fix="name one with --teacher-id")
        if teacher not in known:
            raise UserInputError(f"teacher {teacher!r} not in the score store; known: {', '.join(known) or 'none'}",
                                 path=self.path)
        return teacher

    def has_teacher(self, teacher: str) -> bool:
        return teacher in self.teachers()

    def teacher_info(self, teacher: str | None = None) -> dict:
        t = self.resolve_teacher(teacher)
        row = self._db.execute("SELECT info FROM teachers WHERE teacher = ?", (t,)).fetchone()
        return json.loads(row[0]) if row else {}

    def count(self, teacher: str | None = None) -> int:
        if teacher is None:
            return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM scores WHERE teacher = ?",
                                    (teacher,)).fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    def get(self, teacher: str, query_id: str, doc_id: str) -> float | None:
        row = self._db.execute("SELECT score FROM scores WHERE teacher=? AND query_id=? AND doc_id=?",
                               (teacher, query_id, doc_id)).fetchone()
        return None if row is None else float(row[0])

    def _stored(self, teacher: str, wanted: dict[str, set[str]]) -> Iterator[tuple[str, dict[str, float]]]:
        """``(query_id, {doc_id: score})`` of the ``wanted`` documents that are stored, in query-id order, read a
        query at a time (queries with none stored are left out)."""
        for qid in sorted(wanted):
            docs = wanted[qid]
            found = {d: float(s) for d, s in self._db.execute(
                "SELECT doc_id, score FROM scores WHERE teacher=? AND query_id=? ORDER BY doc_id", (teacher, qid))
                if d in docs}
            if found:
                yield qid, found

    def get_many(self, teacher: str, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """Scores of the given pairs that are present (absent pairs are simply not in the result), keyed by
        ``(str(query_id), str(doc_id))`` as :meth:`put` stores them."""
        return {(q, d): s for q, found in self._stored(teacher, _docs_by_query(pairs)) for d, s in found.items()}

    def missing(self, teacher: str, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs (in the given order, without repeats) that have no score yet.

        Reads the store a query at a time and holds the pairs' ids per query, not their stored scores: asking
        about 50M pairs of a store that has most of them (a resumed run) held every score found and a set of
        every pair seen, 10 GB or more.
        """
        absent = _docs_by_query(pairs)
        for qid, found in self._stored(teacher, absent):
            absent[qid] -= found.keys()
        out = []
        for pair in pairs:
            gone = absent.get(str(pair[0]))
            if gone:
                d = str(pair[1])
                if d in gone:
                    gone.discard(d)  # the first of its repeats only
                    out.append(pair)
        return out

    def iter_rows(self, teacher: str) -> Iterator[tuple[str, str, float]]:
        yield from self._db.execute(
            "SELECT query_id, doc_id, score FROM scores WHERE teacher=? ORDER BY query_id, doc_id", (teacher,))

    def iter_scores(self, teacher: str | None = None,
                    pairs: Iterable[tuple[str, str]] | None = None) -> Iterator[tuple[str, dict[str, float]]]:
        """``(query_id, {doc_id: score})`` of one teacher in query-id order, one query in memory at a time
        (only ``pairs`` when given; a query with none of them stored is left out)."""
        t = self.resolve_teacher(teacher)
        if pairs is None:
            for q, rows in itertools.groupby(self.iter_rows(t), key=lambda r: r[0]):
                yield q, {d: float(s) for _, d, s in rows}
            return
        yield from self._stored_pairs(t, pairs)

    def _stored_pairs(self, teacher: str, pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, dict[str, float]]]:
        """What :meth:`_stored` gives for ``pairs``, with the pairs in a temporary table of SQLite's (on disk,
        not in memory) rather than a Python set per query: an export of 50M pairs would otherwise hold them
        all, about 5 GB. Same order: query ids, then document ids, both as their UTF-8 bytes sort (which is how
        Python sorts strings)."""
        with self._pairs_table(pairs) as wanted:
            # CROSS JOIN keeps the wanted pairs the outer loop: read in key order, each looked up in the scores
            rows = self._db.execute(
                f"SELECT w.query_id, w.doc_id, s.score FROM {wanted} AS w CROSS JOIN scores AS s "
                "ON s.teacher = ? AND s.query_id = w.query_id AND s.doc_id = w.doc_id "
                "ORDER BY w.query_id, w.doc_id", (teacher,))
            try:
                for q, group in itertools.groupby(rows, key=lambda r: r[0]):
                    yield q, {d: float(v) for _, d, v in group}
            finally:
                rows.close()  # an open cursor would keep the table from being dropped

    @contextlib.contextmanager
    def _pairs_table(self, pairs: Iterable[tuple[str, str]]) -> Iterator[str]:
        """The name of a temporary table holding the unique ``(query_id, doc_id)`` pairs (as strings), keyed by
        them; dropped on the way out."""
        table = f"pairs_{next(_TEMP_TABLES)}"
        self._db.execute(f"CREATE TEMP TABLE {table} (query_id TEXT NOT NULL, doc_id TEXT NOT NULL, "
                         "PRIMARY KEY (query_id, doc_id)) WITHOUT ROWID")
        try:
            with self._db:
                self._db.executemany(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)",
                                     ((str(q), str(d)) for q, d in pairs))
            yield table
        finally:
            # a generator closed after its store was, or a reader of the table still open: it goes with the
            # connection
            with contextlib.suppress(sqlite3.ProgrammingError, sqlite3.OperationalError):
                self._db.execute(f"DROP TABLE IF EXISTS temp.{table}")

    def scores(self, teacher: str | None = None,
               pairs: Iterable[tuple[str, str]] | None = None) -> Run:
        """All scores of one teacher as ``{query_id: {doc_id: score}}`` (only ``pairs`` when given)."""
        return dict(self.iter_scores(teacher, pairs))

    # -- export --------------------------------------------------------------------------------------
    def export_run(self, path: str | Path, teacher: str | None = None,
                   pairs: Iterable[tuple[str, str]] | None = None) -> None:
        """Write one teacher's scores as a TREC run (ranked per query by score), a query at a time."""
        t = self.resolve_teacher(teacher)
        write_run_by_query(self.iter_scores(t, pairs), path, tag=run_tag(t))

    def export_json_gz(self, path: str | Path, teacher: str | None = None,
                       pairs: Iterable[tuple[str, str]] | None = None) -> int:
        """Write the paper's teacher format: gzipped JSON ``{qid: {docid: score}}``, a query at a time; returns
        the number of scores written.

        Byte-stable: the bytes of ``json.dumps(scores, sort_keys=True)`` (queries come in id order), and a
        gzip header without file name or time stamp.
        """
        written = 0
        with atomic_write(path, "wb", encoding=None, compress=True) as gz:  # gzipped whatever the name
            gz.write(b"{")
            for n, (q, docs) in enumerate(self.iter_scores(teacher, pairs)):
                gz.write(((", " if n else "") + json.dumps(q) + ": " + json.dumps(docs, sort_keys=True)).encode())
                written += len(docs)
            gz.write(b"}")
        return written

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _teacher_file_items(path: str | Path) -> Iterator[tuple[str, object]]:
    """The ``(query_id, {doc_id: score})`` items of a teacher file, its read and decoding errors as one
    :class:`UserInputError` naming the file."""
    with open_binary(path) as raw:
        try:
            yield from iter_object_items(io.TextIOWrapper(raw, encoding="utf-8"))
        except (ValueError, OSError, EOFError, zlib.error) as e:  # JSON, UTF-8, a bad gzip
            raise UserInputError(f"not a JSON teacher file ({e})", path=path,
                                 fix="expected {qid: {docid: score}}, gzipped or not") from None


def _docs_by_query(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """The pairs' document ids per query id, as the strings :meth:`ScoreStore.put` stores."""
    out: dict[str, set[str]] = {}
    for q, d in pairs:
        out.setdefault(str(q), set()).add(str(d))
    return out

def remove_store(path: str | Path) -> None:
    """Delete a store file with its ``-wal`` and ``-shm`` files (those missing are skipped)."""
    for extra in ("", "-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)


def copy_store(src: str | Path, dst: str | Path) -> None:
    """Copy the store file ``src`` to ``dst``, first removing ``dst`` with its ``-wal`` and ``-shm`` files.

    A writer killed mid-run leaves its write-ahead log beside the database; SQLite would replay that log onto
    the copy at the next open, giving a malformed store with rows that are neither the copy's nor the
    killed run's. ``src`` must not be open for writing."""
    import shutil

    remove_store(dst)
    shutil.copyfile(src, dst)


def _holds_scores(path: Path) -> bool:
    try:
        with ScoreStore(path, readonly=True) as store:
            return store.count() > 0
    except (sqlite3.Error, UserInputError, OSError):
        return False


@contextlib.contextmanager
def new_stores_removed_on_error(*paths: str | Path | None) -> Iterator[None]:
    """Run the block; when it raises (an interrupt too), delete the stores among ``paths`` that did not exist
    before it and still hold no score, so a command that fails on its input leaves no store behind. A store
    that holds scores is kept: its rows are whole transactions, and the same command resumes from them (a
    killed or interrupted scoring run keeps its progress). Close the stores inside the block."""
    fresh = [Path(p) for p in paths if p is not None and not Path(p).exists()]
    try:
        yield
    except BaseException:
        for p in fresh:
            if not _in_use(p) and not _holds_scores(p):
                remove_store(p)
        raise


def _in_use(path: Path) -> bool:
    """Whether another connection may have the store open: SQLite removes a WAL store's ``-wal`` file when its
    last connection closes; on a network filesystem (no WAL, jobs on other nodes) that cannot be told, and the
    store is kept. Another job that opened the store this one created (a ``--cache`` both were given) would
    otherwise lose it, and the scores it goes on writing, when this one fails."""
    return network_filesystem(path.parent) is not None or Path(f"{path}-wal").exists()
