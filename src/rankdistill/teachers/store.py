"""The score store: teacher scores keyed by (teacher id, query id, doc id), in one SQLite file.

Why SQLite: every committed batch is durable and atomic (a ``kill -9`` loses at most the batch in flight
and never corrupts what was written), readers see a consistent snapshot while a writer appends (WAL
journal), and a lookup of millions of pairs needs no custom index code. Each (teacher, query, doc) is
stored once; writing it again keeps the first value, so re-running a scoring job is idempotent.
"""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rankdistill.data.runs import Run, write_run
from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    teacher TEXT NOT NULL, query_id TEXT NOT NULL, doc_id TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (teacher, query_id, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS teachers (teacher TEXT PRIMARY KEY, info TEXT NOT NULL);
"""


class ScoreStore:
    """Persistent, incremental, crash-safe teacher scores.

    >>> store = ScoreStore("scores.db")                                   # doctest: +SKIP
    >>> store.put("ce", [("q1", "d1", 3.2), ("q1", "d2", -1.0)])          # doctest: +SKIP
    >>> store.scores("ce")                                                # doctest: +SKIP
    {'q1': {'d1': 3.2, 'd2': -1.0}}
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise UserInputError("score store not found", path=self.path,
                                     fix="create it with `rankdistill score`")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=60)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()
        try:
            self._db.execute("SELECT 1 FROM scores LIMIT 1")
        except sqlite3.DatabaseError as e:
            raise UserInputError(f"not a rankdistill score store ({e})", path=self.path) from None

    # -- writing -------------------------------------------------------------------------------------
    def set_teacher_info(self, teacher: str, info: dict) -> None:
        """Record how a teacher's scores were made (model, score space, max length, ...)."""
        self._db.execute("INSERT OR REPLACE INTO teachers VALUES (?, ?)",
                         (teacher, json.dumps(info, sort_keys=True)))
        self._db.commit()

    def put(self, teacher: str, rows: Iterable[tuple[str, str, float]]) -> int:
        """Store ``(query_id, doc_id, score)`` rows in one transaction; returns how many were new.

        NaN or infinite scores are refused (nothing of the batch is written) with the offending pairs named.
        """
        batch = [(teacher, str(q), str(d), float(s)) for q, d, s in rows]
        bad = [(q, d) for _, q, d, s in batch if not math.isfinite(s)]
        if bad:
            shown = ", ".join(f"({q}, {d})" for q, d in bad[:5])
            raise UserInputError(f"teacher {teacher!r} gave {len(bad)} non-finite score(s), e.g. {shown}; "
                                 "nothing of this batch was stored",
                                 fix="check the model and its inputs (max length, dtype)")
        before = self._db.total_changes
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?)", batch)
        return self._db.total_changes - before

    # -- reading -------------------------------------------------------------------------------------
    def teachers(self) -> list[str]:
        """Teacher ids present in the store (with scores or recorded info)."""
        rows = self._db.execute(
            "SELECT teacher FROM teachers UNION SELECT DISTINCT teacher FROM scores ORDER BY 1").fetchall()
        return [r[0] for r in rows]

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
            raise UserInputError(f"teacher {teacher!r} not in the score store; known: {', '.join(known)}",
                                 path=self.path)
        return teacher

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

    def get_many(self, teacher: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """Scores of the given pairs that are present (absent pairs are simply not in the result)."""
        wanted = set(pairs)
        out: dict[tuple[str, str], float] = {}
        for qid in sorted({q for q, _ in wanted}):
            for did, score in self._db.execute(
                    "SELECT doc_id, score FROM scores WHERE teacher=? AND query_id=?", (teacher, qid)):
                if (qid, did) in wanted:
                    out[(qid, did)] = float(score)
        return out

    def missing(self, teacher: str, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs (in the given order, without repeats) that have no score yet."""
        have = self.get_many(teacher, pairs)
        seen: set[tuple[str, str]] = set()
        out = []
        for p in pairs:
            if p not in have and p not in seen:
                seen.add(p)
                out.append(p)
        return out

    def iter_rows(self, teacher: str) -> Iterator[tuple[str, str, float]]:
        yield from self._db.execute(
            "SELECT query_id, doc_id, score FROM scores WHERE teacher=? ORDER BY query_id, doc_id", (teacher,))

    def scores(self, teacher: str | None = None) -> Run:
        """All scores of one teacher as ``{query_id: {doc_id: score}}``."""
        t = self.resolve_teacher(teacher)
        run: Run = {}
        for q, d, s in self.iter_rows(t):
            run.setdefault(q, {})[d] = float(s)
        return run

    # -- export --------------------------------------------------------------------------------------
    def export_run(self, path: str | Path, teacher: str | None = None) -> None:
        """Write one teacher's scores as a TREC run (ranked per query by score)."""
        t = self.resolve_teacher(teacher)
        write_run(self.scores(t), path, tag=t.replace(" ", "_"))

    def export_json_gz(self, path: str | Path, teacher: str | None = None) -> None:
        """Write the paper's teacher format: gzipped JSON ``{qid: {docid: score}}``."""
        data = self.scores(teacher)
        with atomic_write(path, "wb", encoding=None) as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(json.dumps(data, sort_keys=True).encode("utf-8"))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
