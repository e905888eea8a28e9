"""Metrics by name through ``ir_measures`` (never computed by hand).

Conventions, stated once:
- Measures are ``ir_measures`` strings: ``nDCG@10``, ``AP(rel=2)``, ``RR(rel=2)@10``, ``R@100``.
- nDCG uses the graded judgements. Binary measures given without ``rel=`` use the dataset's
  ``rel_threshold`` (TREC DL: 2), so ``AP`` on DL19 means ``AP(rel=2)``.
- Means are over *judged* queries (queries with at least one judgement). A judged query missing from the run
  scores 0 on every measure (``trec_eval -c``); queries of the run without judgements are dropped, with a
  logged count.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, iter_lines

logger = logging.getLogger(__name__)

_GRADED = ("nDCG", "ERR", "Judged", "alpha_nDCG")


def _with_threshold(name: str, rel_threshold: int) -> str:
    """Add ``rel=T`` to a binary measure written without one (``AP`` -> ``AP(rel=2)``)."""
    if rel_threshold <= 1 or "rel=" in name or name.startswith(_GRADED):
        return name
    base, at, cutoff = name.partition("@")
    if base.endswith(")"):
        base = f"{base[:-1]},rel={rel_threshold})"
    else:
        base = f"{base}(rel={rel_threshold})"
    return f"{base}{at}{cutoff}"


def parse_metrics(names: Iterable[str], rel_threshold: int = 1) -> list:
    """Parse measure names with ``ir_measures``; an unknown name is a :class:`UserInputError`."""
    import ir_measures

    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(_with_threshold(name.strip(), rel_threshold)))
        except (ValueError, NameError, SyntaxError, TypeError) as e:
            raise UserInputError(f"unknown measure {name!r} ({e})",
                                 fix="use ir_measures names such as nDCG@10, AP(rel=2), RR@10, R@100") from None
    return out


def default_metrics(rel_threshold: int = 1, extra: Sequence[str] = ()) -> list[str]:
    """``nDCG@10``, plus ``AP``, ``RR@10`` and ``R@100`` at the relevance threshold when the dataset has graded
    judgements with a threshold above 1 (TREC DL), plus any measures the dataset's manifest lists."""
    names = ["nDCG@10"]
    if rel_threshold > 1:
        t = rel_threshold
        names += [f"AP(rel={t})", f"RR(rel={t})@10", f"R(rel={t})@100"]
    for m in extra:
        if m not in names:
            names.append(m)
    return names


@dataclass
class EvaluationResult:
    """Means over judged queries and per-query values ``{measure: {qid: value}}``."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    judged_queries: int
    queries_missing_from_run: int = 0
    unjudged_queries_dropped: int = 0
    unknown_docs: int = 0
    notes: list[str] = field(default_factory=list)


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                 metrics: Sequence[str] | None = None, rel_threshold: int = 1,
                 corpus=None) -> EvaluationResult:
    """Evaluate ``run`` against ``qrels`` with ``ir_measures``.

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: relevance}}``; queries with judgements define the evaluated set.
        metrics: measure names (default :func:`default_metrics`).
        rel_threshold: relevance level for binary measures given without ``rel=``.
        corpus: when given (anything supporting ``in``), documents of the run absent from it are counted and
            warned about; the run is evaluated anyway.
    """
    import ir_measures

    names = list(metrics) if metrics else default_metrics(rel_threshold)
    parsed = parse_metrics(names, rel_threshold)
    labels = dict(zip(parsed, names))
    judged = {q: d for q, d in qrels.items() if d}
    if not judged:
        raise UserInputError("the qrels hold no judgements", fix="check the --split and the qrels file")
    unjudged = [q for q in run if q not in judged]
    if unjudged:
        logger.info("dropped %d run queries without judgements", len(unjudged))
    unknown = 0
    if corpus is not None:
        unknown = sum(1 for q, docs in run.items() if q in judged for d in docs if d not in corpus)
        if unknown:
            logger.warning("the run names %d document(s) absent from the corpus; evaluating anyway", unknown)
    sub_run = {q: {d: float(s) for d, s in run[q].items()} for q in judged if run.get(q)}
    missing = len(judged) - len(sub_run)
    if missing:
        logger.warning("%d judged queries have no results in the run; they score 0", missing)
    per_query: dict[str, dict[str, float]] = {name: dict.fromkeys(judged, 0.0) for name in names}
    if sub_run:
        qrels_in = {q: {d: int(r) for d, r in docs.items()} for q, docs in judged.items()}
        for m in ir_measures.iter_calc(parsed, qrels_in, sub_run):
            per_query[labels[m.measure]][str(m.query_id)] = float(m.value)
    means = {name: math.fsum(v.values()) / len(v) for name, v in per_query.items()}
    return EvaluationResult(means=means, per_query=per_query, judged_queries=len(judged),
                            queries_missing_from_run=missing, unjudged_queries_dropped=len(unjudged),
                            unknown_docs=unknown)


def write_per_query(per_query: Mapping[str, Mapping[str, float]], path: str | Path) -> None:
    """Write ``query_id<TAB>measure<TAB>value`` rows (with that header), sorted by measure then query id."""
    with atomic_write(path) as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["query_id", "measure", "value"])
        for measure in per_query:
            for qid in sorted(per_query[measure]):
                w.writerow([qid, measure, repr(float(per_query[measure][qid]))])


def read_per_query(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a per-query TSV back into ``{measure: {qid: value}}`` (errors name file and line)."""
    out: dict[str, dict[str, float]] = {}
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if n == 1 and parts[:3] == ["query_id", "measure", "value"]:
            continue
        if len(parts) != 3:
            raise UserInputError(f"expected 3 tab-separated fields query_id, measure, value; found {len(parts)}",
                                 path=path, line=n)
        try:
            value = float(parts[2])
        except ValueError:
            raise UserInputError(f"value {parts[2]!r} is not a number", path=path, line=n) from None
        if not math.isfinite(value):
            raise UserInputError(f"value {parts[2]!r} is not finite", path=path, line=n)
        values = out.setdefault(parts[1], {})
        if parts[0] in values:
            raise UserInputError(f"query {parts[0]!r} has a second {parts[1]} value", path=path, line=n,
                                 fix="one row per (query, measure)")
        values[parts[0]] = value
    if not out:
        raise UserInputError("per-query file holds no values", path=path)
    return out
