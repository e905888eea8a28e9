"""The scoring engine: from (query id, doc id) pairs to scores in the store, fast and resumable.

What makes it fast (the recipe of Tevatron and of sentence-transformers' own encode):

- only unique pairs that the store does not hold yet are scored (each (teacher, query, doc) once, however many
  groups contain it);
- pairs are tokenised up front, a chunk at a time, by the fast tokenizer's batch call, in a background thread
  while the model works on the previous chunk;
- within a chunk, pairs are sorted by token length and batched, so each batch is padded only to its own longest
  pair (:mod:`rankdistill.teachers.batching`);
- the model runs under ``torch.inference_mode()``, in bfloat16/float16 on a GPU.

What makes it crash-safe: scores are committed to the SQLite store in transactions of :data:`COMMIT_ROWS`
scores or :data:`COMMIT_SECONDS`, so a ``kill -9`` loses at most that much work (an interruption or error
commits what was scored first), and re-running the same job scores only what is missing. A
pair's score does not depend on which other pairs share its batch (padding is masked; only floating-point
rounding can differ), so a resumed run ends with the same store as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from rankdistill import __version__
from rankdistill.errors import UserInputError, is_integer
from rankdistill.teachers.ensemble import ZStats, mean_z, zstats
from rankdistill.teachers.models import Teacher, TeacherConfig, load_teacher
from rankdistill.teachers.pairs import Pair
from rankdistill.teachers.store import ScoreStore

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 8192

COMMIT_ROWS = 8192
COMMIT_SECONDS = 0.5
""":func:`score_pairs` commits its scores once :data:`COMMIT_ROWS` are waiting or :data:`COMMIT_SECONDS` have
passed since the last commit, and at the end of each block of pairs: a killed run loses at most that. Committing
each GPU batch of 64 cost about 40 us a row in SQLite, a quarter of the teacher's own time on a GPU, in the
thread that feeds it."""


class PairTexts(Protocol):
    """Where the engine gets the texts of queries and documents."""

    def query(self, query_id: str) -> str: ...

    def doc(self, doc_id: str) -> str: ...


@dataclass(frozen=True)
class CorpusTexts:
    """:class:`PairTexts` over a ``{query_id: text}`` mapping and a document store (``store.text(doc_id)``)."""

    queries: Mapping[str, str]
    corpus: Any

    def query(self, query_id: str) -> str:
        try:
            return self.queries[query_id]
        except KeyError:
            raise UserInputError(f"query id {query_id!r} is not in the dataset's queries",
                                 fix="check the dataset and split") from None

    def doc(self, doc_id: str) -> str:
        try:
            return self.corpus.text(doc_id)
        except KeyError:
            raise UserInputError(f"document id {doc_id!r} is not in the corpus", fix="check the dataset") from None


@dataclass(frozen=True)
class ScoringReport:
    """What one scoring job did: pairs asked for, found in the store, newly scored, and time taken.

    Pairs are counted once per block of :class:`PairBlocks` (once in all for a sequence of pairs): a pair asked
    for again in a later block (a query whose groups are apart in a file of more than one block) is counted
    again, as found in the store.
    """

    teacher_id: str
    requested: int
    cached: int
    scored: int
    seconds: float
    reused: int = 0
    """Pairs copied from a shared cache store instead of being scored (counted in neither ``cached``
    nor ``scored``)."""
    load_seconds: float = 0.0
    """Of ``seconds``, the time spent loading the teacher's model (a teacher loads it before the first pair it
    scores, and not at all when every pair is stored)."""

    @property
    def pairs_per_second(self) -> float:
        """Pairs scored per second of the job, the model's loading left out."""
        busy = self.seconds - self.load_seconds
        return self.scored / busy if busy > 0 else 0.0

    def to_dict(self) -> dict:
        return {"teacher_id": self.teacher_id, "requested": self.requested, "cached": self.cached,
                "reused": self.reused, "scored": self.scored, "seconds": round(self.seconds, 3),
                "load_seconds": round(self.load_seconds, 3), "pairs_per_second": round(self.pairs_per_second, 1)}


def unique_pairs(pairs: Iterable[Pair]) -> list[Pair]:
    """The pairs in first-seen order, without repeats."""
    return list(dict.fromkeys((str(q), str(d)) for q, d in pairs))


def check_chunk_size(chunk_size: int) -> None:
    """Raise unless ``chunk_size`` (pairs tokenised and scored at a time) is at least 1."""
    if not is_integer(chunk_size) or chunk_size < 1:
        raise UserInputError(f"the chunk size must be an integer >= 1, got {chunk_size!r}",
                             fix="e.g. --chunk-size 4096")


def claim_teacher_id(store: ScoreStore, teacher_id: str, identity: dict, info: dict) -> dict:
    """Record ``info`` for a new teacher id, or check that an existing one was made the same way.

    Returns the stored info. Raises :class:`UserInputError` when the id holds scores made with other settings
    (another model, score space or max length): mixing them would silently corrupt the labels. The check and the
    record are one transaction (:meth:`ScoreStore.writing`), so two jobs sharing a store take turns.
    """
    with store.writing():
        return _claim_teacher_id(store, teacher_id, identity, info)


def _claim_teacher_id(store: ScoreStore, teacher_id: str, identity: dict, info: dict) -> dict:
    if store.has_teacher(teacher_id):
        old = store.teacher_info(teacher_id)
        diff = sorted(k for k, v in identity.items() if not _entry_matches(k, v, old))
        if diff:
            shown = "; ".join(f"{k}: stored {old.get(k)!r}, now {identity[k]!r}" for k in diff[:3])
            same = f"give --dtype {old['dtype']} (scores made on a GPU are read on a CPU that way), " \
                if diff == ["dtype"] else "use the same settings, "
            raise UserInputError(
                f"teacher id {teacher_id!r} in {store.path} holds scores made with other settings ({shown})",
                fix=f"{same}or store these scores under another id with --teacher-id")
        if any(old.get(k) != identity[k] for k in identity):  # only keys an earlier version did not record
            logger.warning("teacher id %r in %s was stored before rankdistill recorded %s; recording the "
                           "current values, so later changes are caught", teacher_id, store.path,
                           ", ".join(sorted(_RECORDED_LATER)))
            old = {**old, **identity}
            store.set_teacher_info(teacher_id, old)
        return old
    twins = [t for t in store.teachers()
             if all(k in (o := store.teacher_info(t)) and _same(v, o[k]) for k, v in identity.items())]
    if twins:  # e.g. the same folder given as ../teacher and as /abs/teacher: ids are names, not paths
        logger.warning("teacher id %r is new in %s, but the same teacher (model, weights and settings) is stored "
                       "there as %r: its scores are computed again; give --teacher-id %s to use them", teacher_id,
                       store.path, twins[0], twins[0])
    store.set_teacher_info(teacher_id, info)
    return info


_RECORDED_LATER = frozenset({"weights", "dtype"})
"""Identity keys that stores made by earlier versions lack (at the top, or in the members of a cross-fitted
or ensemble teacher); such a store is taken as it is and the keys are added."""


def _entry_matches(key: str, new: object, old: dict) -> bool:
    """Whether identity entry ``key: new`` matches the stored dict ``old`` (which may lack it when it is one
    of :data:`_RECORDED_LATER`)."""
    return _same(new, old[key]) if key in old else key in _RECORDED_LATER


def _same(new: object, old: object) -> bool:
    """Whether an identity value equals the stored one, where the stored one may lack :data:`_RECORDED_LATER`
    keys at any depth."""
    if isinstance(new, dict) and isinstance(old, dict):
        return all(_entry_matches(k, v, old) for k, v in new.items()) and set(old) <= set(new)
    if isinstance(new, list | tuple) and isinstance(old, list | tuple):
        return len(new) == len(old) and all(_same(a, b) for a, b in zip(new, old))
    return new == old


def _report_bad(teacher_id: str, bad: list[Pair], total_bad: int) -> UserInputError:
    shown = ", ".join(f"({q}, {d})" for q, d in bad[:5])
    return UserInputError(
        f"teacher {teacher_id!r} gave {total_bad} non-finite (NaN/inf) score(s), e.g. {shown}; they were not "
        "stored (the finite scores were)", fix="check the model and its inputs; try --dtype float32")


_WORKER_TEACHERS: dict[TeacherConfig, Teacher] = {}
"""The teachers a worker process loaded for :func:`score_chunk` (each once per process)."""


def score_chunk(config: TeacherConfig, queries: Sequence[str], docs: Sequence[str],
                query_ids: Sequence[str]) -> np.ndarray:
    """Score pairs ``(queries[i], docs[i])`` with the teacher of ``config``, in an executor's worker (a Ray
    task or a pool process): the teacher is loaded once per worker, and the chunk goes through the same
    preparation and length-sorted batches as in :func:`score_pairs`, so the scores are the same."""
    teacher = _WORKER_TEACHERS.get(config)
    if teacher is None:
        for other in _WORKER_TEACHERS.values():  # one teacher resident per worker at a time
            other.close()
        _WORKER_TEACHERS.clear()
        teacher = _WORKER_TEACHERS[config] = load_teacher(config)
    return teacher.score(list(queries), list(docs), list(query_ids))


class PairBlocks(Protocol):
    """Pairs too many to hold at once, given a block at a time (a groups file's
    :class:`~rankdistill.teachers.pairs.GroupPairs`): ``pairs`` is the sum of the blocks' sizes, and
    :meth:`blocks` may be called again for a second pass."""

    pairs: int

    def blocks(self) -> Iterator[list[Pair]]: ...


@dataclass(frozen=True)
class _OneBlock:
    block: list[Pair]

    @property
    def pairs(self) -> int:
        return len(self.block)

    def blocks(self) -> Iterator[list[Pair]]:
        return iter([self.block])


def as_pair_blocks(pairs: Sequence[Pair] | PairBlocks) -> PairBlocks:
    """``pairs`` itself when it comes in blocks, else its unique pairs as one block."""
    return pairs if hasattr(pairs, "blocks") else _OneBlock(unique_pairs(pairs))  # type: ignore[arg-type]


def score_pairs(teacher: Teacher, pairs: Sequence[Pair] | PairBlocks, texts: PairTexts, store: ScoreStore, *,
                chunk_size: int = DEFAULT_CHUNK, show_progress: bool = True,
                cache: ScoreStore | None = None, executor=None) -> ScoringReport:
    """Score the pairs the store lacks with ``teacher``, committing them every :data:`COMMIT_ROWS` rows or
    :data:`COMMIT_SECONDS`, whichever comes first.

    Args:
        teacher: a loaded teacher (:func:`~rankdistill.teachers.models.load_teacher`).
        pairs: ``(query_id, doc_id)`` pairs (repeats are scored once), or :class:`PairBlocks`, scored a block at
            a time (which pairs the store lacks is asked per block, so a pair repeated in a later block is found
            stored there).
        texts: query and document texts.
        store: the score store; the teacher's id and info are recorded (and checked) there.
        chunk_size: pairs tokenised at a time (the length sort works within a chunk).
        cache: a second store shared by several jobs (e.g. every strategy's mining in a study): pairs found
            there are copied into ``store`` instead of being scored, and new scores go to both. ``store``
            ends up the same either way; only the work differs.
        executor: an executor of :mod:`rankdistill.experiments.executors` (Ray tasks, a process pool): each
            chunk is scored by :func:`score_chunk` in a worker, and this process stores the scores as chunks
            finish. ``None`` scores here.

    Raises:
        UserInputError: the teacher id holds scores made with other settings, or the teacher gave NaN/inf
            for some pairs (those are reported and not stored).
    """
    check_chunk_size(chunk_size)
    start = time.perf_counter()
    tid = teacher.teacher_id
    claim_teacher_id(store, tid, teacher.identity(), teacher.info())
    blocks = as_pair_blocks(pairs)
    cached = reused = scored = 0
    load_seconds = 0.0
    warmed = cache_claimed = False
    # the bar counts every pair asked for: those found stored or in the cache advance it at once
    bar = tqdm(total=blocks.pairs, desc=f"scoring {tid}", unit="pair", unit_scale=True, dynamic_ncols=True,
               disable=None if show_progress else True, mininterval=1.0)

    def prepare(chunk: list[Pair]) -> Any:
        return teacher.prepare_pairs(*chunk_inputs(chunk, texts))

    pending: list[tuple[str, str, float]] = []
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal scored, last_commit
        last_commit = time.monotonic()
        if not pending:
            return
        if cache is not None:  # first: a kill between the two leaves the pairs where a re-run copies them from
            cache.put(tid, pending)
        scored += store.put(tid, pending)
        pending.clear()  # only once both hold them (both writes keep a pair's first score, so a retry is safe)

    def keep(chunk: list[Pair], index: np.ndarray, scores: np.ndarray) -> None:
        rows = [(chunk[j][0], chunk[j][1], float(s)) for j, s in zip(index.tolist(), scores.tolist())]
        finite = np.isfinite(scores)
        if not finite.all():
            pending.extend(r for r, ok in zip(rows, finite) if ok)
            commit()
            raise _report_bad(tid, [(r[0], r[1]) for r, ok in zip(rows, finite) if not ok], int((~finite).sum()))
        pending.extend(rows)
        if len(pending) >= COMMIT_ROWS or time.monotonic() - last_commit >= COMMIT_SECONDS:
            commit()
        bar.update(len(rows))

    def score_chunks(chunks: list[list[Pair]]) -> None:
        if executor is not None:
            from dataclasses import replace as _replace

            from rankdistill.teachers.runtime import dtype_name

            # workers score in this process's dtype (the one the store records): a CPU head with GPU workers
            # would otherwise store their bf16 scores as float32 ones
            dtype = getattr(teacher, "dtype", None)
            config = teacher.config if dtype is None else _replace(teacher.config, dtype=dtype_name(dtype))
            executor.map(score_chunk, ChunkTasks(config, chunks, texts),
                         on_done=lambda i, scores: keep(chunks[i], np.arange(len(chunks[i])), np.asarray(scores)))
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rankdistill-tokenize")
        try:
            future = pool.submit(prepare, chunks[0])
            for i, chunk in enumerate(chunks):
                prepared = future.result()
                if i + 1 < len(chunks):
                    future = pool.submit(prepare, chunks[i + 1])
                for index, scores in teacher.run(prepared):
                    keep(chunk, index, scores)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    try:
        for block in blocks.blocks():
            todo = store.missing(tid, block)
            cached += len(block) - len(todo)
            bar.update(len(block) - len(todo))
            if cache is not None and todo:
                if not cache_claimed:
                    claim_teacher_id(cache, tid, teacher.identity(), teacher.info())
                    cache_claimed = True
                found = cache.get_many(tid, todo)
                if found:
                    reused += store.put(tid, [(q, d, v) for (q, d), v in found.items()])
                    todo = [p for p in todo if p not in found]
                    bar.update(len(found))
            if todo:
                if executor is None and not warmed:  # here, the model is loaded now, and timed apart
                    t = time.perf_counter()
                    teacher.warm(q for q, _ in todo)
                    load_seconds, warmed = time.perf_counter() - t, True
                score_chunks([todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)])
                commit()
    except BaseException:
        with contextlib.suppress(Exception):  # what was scored before an interruption is kept; a store that
            commit()  # cannot take it does not hide the error that stopped the scoring
        raise
    finally:
        bar.close()
    if cached:
        logger.info("teacher %s: %d of %d pairs already in %s", tid, cached, blocks.pairs, store.path)
    if reused:
        logger.info("teacher %s: %d pairs copied from the shared store %s", tid, reused, cache.path)  # type: ignore[union-attr]
    report = ScoringReport(tid, blocks.pairs, cached, scored, time.perf_counter() - start, reused, load_seconds)
    if scored:
        logger.info("teacher %s: scored %d pairs in %.1fs (%.0f pairs/s; loading the model %.1fs of it)", tid,
                    scored, report.seconds, report.pairs_per_second, report.load_seconds)
    return report


def chunk_inputs(chunk: Sequence[Pair], texts: PairTexts) -> tuple[list[str], list[str], list[str]]:
    """A chunk's query texts, document texts and query ids: what a teacher scores it from."""
    return [texts.query(q) for q, _ in chunk], [texts.doc(d) for _, d in chunk], [q for q, _ in chunk]


class ChunkTasks(Sequence):
    """The arguments of :func:`score_chunk` for each chunk, built when an executor takes them: the texts of
    every chunk at once would be tens of GB at MS MARCO scale (100M pairs)."""

    def __init__(self, config: TeacherConfig, chunks: list[list[Pair]], texts: PairTexts) -> None:
        self.config, self.chunks, self.texts = config, chunks, texts

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return (self.config, *chunk_inputs(self.chunks[i], self.texts))


@dataclass(frozen=True)
class EnsembleConfig:
    """Several teachers named as one: the mean of their z-normalised scores (:mod:`rankdistill.teachers.ensemble`)."""

    members: tuple[TeacherConfig, ...]
    teacher_id: str | None = None

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise UserInputError("an ensemble needs at least two teachers")
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise UserInputError(f"ensemble members must have distinct ids, got {ids}")

    @property
    def id(self) -> str:
        return self.teacher_id or "zmean(" + "+".join(m.id for m in self.members) + ")"


def score_ensemble(config: EnsembleConfig, pairs: Sequence[Pair] | PairBlocks, texts: PairTexts,
                   store: ScoreStore, *, chunk_size: int = DEFAULT_CHUNK, show_progress: bool = True, executor=None
                   ) -> list[ScoringReport]:
    """Score ``pairs`` (or :class:`PairBlocks`) with every member (each stored under its own id), then store the
    ensemble's scores.

    The members' means and standard deviations are computed over this job's unique pairs the first time and then
    frozen in the ensemble's teacher info, so later (or resumed) jobs give each pair the same ensemble score.
    Returns the members' reports followed by the ensemble's.
    """
    start = time.perf_counter()
    blocks = as_pair_blocks(pairs)
    reports: list[ScoringReport] = []
    identities: list[dict] = []
    for member in config.members:
        teacher = load_teacher(member)
        try:
            reports.append(score_pairs(teacher, blocks, texts, store, chunk_size=chunk_size,
                                       show_progress=show_progress, executor=executor))
            identities.append({"teacher_id": member.id, **teacher.identity()})
        finally:
            teacher.close()
    eid = config.id
    identity = {"kind": "ensemble", "combination": "mean_z", "members": identities}
    stats: list[ZStats] | None = None
    if store.has_teacher(eid):
        info = claim_teacher_id(store, eid, identity, {})
        if "zstats" in info:
            stats = [ZStats.from_dict(info["zstats"][m.id]) for m in config.members]
    if stats is None:
        stats = [zstats(_member_values(store, m.id, blocks)) for m in config.members]
        info = {**identity, "teacher_id": eid, "rankdistill": __version__, "score_space": "mean_z",
                "zstats": {m.id: s.to_dict() for m, s in zip(config.members, stats)},
                "normalisation": "global z-score per member (population std) over the first job's pairs, frozen"}
        store.set_teacher_info(eid, info)
    cached = scored = 0
    for block in blocks.blocks():
        todo = store.missing(eid, block)
        cached += len(block) - len(todo)
        for i in range(0, len(todo), chunk_size):
            chunk = todo[i:i + chunk_size]
            ens = mean_z(_member_matrix(store, config, chunk), stats)
            scored += store.put(eid, [(q, d, float(s)) for (q, d), s in zip(chunk, ens)])
    reports.append(ScoringReport(eid, blocks.pairs, cached, scored, time.perf_counter() - start))
    return reports


def _member_values(store: ScoreStore, member: str, blocks: PairBlocks) -> np.ndarray:
    """One member's scores of the unique pairs of every block, in (query id, doc id) order: a pair repeated in
    two blocks counts once, and the order does not depend on the file's."""
    pairs = (p for block in blocks.blocks() for p in block)
    return np.fromiter((v for _, docs in store.iter_scores(member, pairs) for v in docs.values()), dtype=np.float64)


def _member_matrix(store: ScoreStore, config: EnsembleConfig, pairs: Sequence[Pair]) -> np.ndarray:
    rows = []
    for m in config.members:
        got = store.get_many(m.id, pairs)
        missing = [p for p in pairs if p not in got]
        if missing:  # pragma: no cover - score_pairs stores every pair or raises
            raise RuntimeError(f"member {m.id} lacks {len(missing)} scores")
        rows.append([got[p] for p in pairs])
    return np.asarray(rows, dtype=np.float64)


TeacherSpec = TeacherConfig | EnsembleConfig


class TeacherScores:
    """Scores of one teacher (or ensemble) for any pairs: read from the store, computing what is missing.

    The teacher is loaded at the first pair that needs scoring and kept until :meth:`close`. Mining uses this
    so that the scores it needs land in a store, and ``rankdistill score`` later finds them cached.
    """

    def __init__(self, spec: TeacherSpec, store: ScoreStore, texts: PairTexts, *, chunk_size: int = DEFAULT_CHUNK,
                 show_progress: bool = True, cache: ScoreStore | None = None, executor=None) -> None:
        self.spec = spec
        self.executor = executor
        self.store = store
        self.cache = cache
        self.texts = texts
        self.chunk_size = chunk_size
        self.show_progress = show_progress
        self._teacher: Teacher | None = None
        self._claimed = False  # the first get checks the teacher against the store even when nothing is missing
        self.reports: list[ScoringReport] = []
        check_chunk_size(chunk_size)

    @property
    def teacher_id(self) -> str:
        return self.spec.id

    def get(self, pairs: Iterable[Pair]) -> dict[Pair, float]:
        """``{(query_id, doc_id): score}`` for every given pair."""
        wanted = unique_pairs(pairs)
        # the first call goes through scoring even when the store has every pair: scoring is what checks that
        # the id's stored scores were made by this teacher (a teacher retrained into the same folder, or given
        # another max length, would otherwise be served the old scores)
        if not self._claimed:
            self._score(wanted)
            self._claimed = True
            return self.store.get_many(self.teacher_id, wanted)
        # after that, one read of the store, and scoring (and reading) only what it lacks: asking which pairs are
        # missing, then scoring them, then reading all read the store three times (a minute per block of 2M
        # pairs in a resumed MS MARCO mining)
        got = self.store.get_many(self.teacher_id, wanted)
        if len(got) < len(wanted):
            todo = [p for p in wanted if p not in got]
            self._score(todo)
            got.update(self.store.get_many(self.teacher_id, todo))
        return got

    def _score(self, pairs: list[Pair]) -> None:
        if isinstance(self.spec, EnsembleConfig):
            self.reports.extend(score_ensemble(self.spec, pairs, self.texts, self.store, chunk_size=self.chunk_size,
                                               show_progress=self.show_progress, executor=self.executor))
            return
        if self._teacher is None:
            self._teacher = load_teacher(self.spec)
        self.reports.append(score_pairs(self._teacher, pairs, self.texts, self.store, chunk_size=self.chunk_size,
                                        show_progress=self.show_progress, cache=self.cache, executor=self.executor))

    def info(self) -> dict:
        return self.store.teacher_info(self.teacher_id) if self.store.has_teacher(self.teacher_id) else {}

    def close(self) -> None:
        if self._teacher is not None:
            self._teacher.close()
            self._teacher = None
