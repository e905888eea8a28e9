"""TREC run files: ``qid Q0 docid rank score tag``, the common currency between stages."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from rankdistill.errors import UserInputError, is_integer
from rankdistill.io import atomic_write, iter_lines, require_file

Run = dict[str, dict[str, float]]
"""A ranking: ``{query_id: {doc_id: score}}``; higher scores rank first."""


def read_run(path: str | Path) -> Run:
    """Read a TREC run file (gzipped or not) into ``{qid: {docid: score}}``.

    Raises :class:`UserInputError` naming the file and line for a malformed line. A document listed twice
    for the same query keeps its highest score.
    """
    run: Run = {}
    require_file(path, "run file")
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise UserInputError(
                f"expected 6 fields 'qid Q0 docid rank score tag', found {len(parts)}", path=path, line=n,
                fix="give a TREC run file")
        qid, _, did, _, score_s, _ = parts
        try:
            score = float(score_s)
        except ValueError:
            raise UserInputError(f"score {score_s!r} is not a number", path=path, line=n,
                                 fix="the fifth field of a TREC run line is its score") from None
        if math.isnan(score):
            raise UserInputError("score is NaN", path=path, line=n, fix="give every candidate a finite score")
        docs = run.setdefault(qid, {})
        if did not in docs or score > docs[did]:
            docs[did] = score
    return run


def judged_part(run: Run, qrels: Mapping[str, Mapping[str, int]]) -> Run:
    """The queries of ``run`` that ``qrels`` judges (a query with at least one judgement); all of them when the
    qrels judge nothing (a split without judgements, e.g. for inference)."""
    judged = {q for q, docs in qrels.items() if docs}
    return {q: docs for q, docs in run.items() if q in judged} if judged else run


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Sort ``{docid: score}`` by score descending, ties by doc id, for a deterministic order."""
    return sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))


_SPACE = re.compile(r"\s")


def check_cutoff(k: object, name: str = "k", optional: bool = True) -> None:
    """Raise unless ``k`` (a rank cutoff) is an integer >= 0, or ``None`` (all) where ``optional``: a negative
    one would slice away each list's last entries instead."""
    if k is None and optional:
        return
    if not is_integer(k):
        raise TypeError(f"{name} must be an integer, got {k!r}")
    if k < 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be >= 0{' (or None for all)' if optional else ''}, got {k}")


def _field(value: object, what: str, fix: str | None = None) -> str:
    """A run file's id or tag: a non-empty string without whitespace (a space would add a column)."""
    text = str(value)
    if not text or _SPACE.search(text):
        raise UserInputError(f"{what} {text!r} is empty or holds whitespace, which a TREC run line cannot carry",
                             fix=fix)
    return text


def run_tag(name: str, explicit: bool = False) -> str:
    """A run tag: a name made into one (a model folder's, a candidates file's; whitespace becomes ``_``), or,
    with ``explicit``, a tag the user gave, refused in one line when a TREC line cannot carry it."""
    if explicit:
        return _field(name, "run tag", fix="e.g. --tag my_run")
    return _SPACE.sub("_", str(name)) or "run"


def _query_lines(qid: str, docs: Mapping[str, float], tag: str, k: int | None) -> list[str]:
    """One query's TREC lines, ranked (``tag`` already checked)."""
    q = _field(qid, "query id")
    nan = [d for d, s in docs.items() if math.isnan(s)]
    if nan:
        raise UserInputError(f"query {q}: {len(nan)} NaN score(s), e.g. for document {nan[0]}",
                             fix="check the model or scorer that made the run")
    items = ranked(docs)
    if k is not None:
        items = items[:k]
    return [f"{q} Q0 {_field(did, 'document id')} {rank} {score:.6f} {tag}\n"
            for rank, (did, score) in enumerate(items, start=1)]


def format_run_lines(run: Mapping[str, Mapping[str, float]], tag: str = "rankdistill",
                     k: int | None = None) -> list[str]:
    """Render a run as TREC lines sorted by query id then rank; keeps the top ``k`` (>= 0) per query if given.

    Raises :class:`UserInputError` (a ``ValueError``) for what :func:`read_run` could not read back: a NaN
    score, or an id or tag that is empty or holds whitespace; a negative ``k`` is a ``ValueError``."""
    check_cutoff(k)
    tag = _field(tag, "run tag")
    return [line for qid in sorted(run) for line in _query_lines(qid, run[qid], tag, k)]


def write_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "rankdistill",
              k: int | None = None) -> None:
    """Write a run atomically in TREC format (a temporary file renamed on success)."""
    write_run_by_query(((q, run[q]) for q in sorted(run)), path, tag=tag, k=k)


def write_run_by_query(queries: Iterable[tuple[str, Mapping[str, float]]], path: str | Path,
                       tag: str = "rankdistill", k: int | None = None) -> None:
    """:func:`write_run` from ``(query id, {doc id: score})`` items given in query-id order, one query in
    memory at a time (a teacher's 50M scores need not be one dict, nor their lines one list)."""
    check_cutoff(k)
    try:
        tag = _field(tag, "run tag")
        with atomic_write(path) as fh:
            for qid, docs in queries:
                fh.writelines(_query_lines(qid, docs, tag, k))
    except UserInputError as e:  # named with the file it was to go to; the file is not written
        raise UserInputError(e.message, path=path, fix=e.fix) from None
