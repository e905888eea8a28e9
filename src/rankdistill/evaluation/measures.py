"""Metrics by name through ``ir_measures`` (never computed by hand).

Conventions, stated once:
- Measures are ``ir_measures`` strings: ``nDCG@10``, ``AP(rel=2)``, ``RR(rel=2)@10``, ``R@100``.
- nDCG uses the graded judgements. Binary measures given without ``rel=`` use the dataset's
  ``rel_threshold`` (TREC DL: 2), so ``AP`` on DL19 means ``AP(rel=2)``.
- Means are over *judged* queries (queries with at least one judgement). A judged query missing from the run
  scores 0 on every measure (``trec_eval -c``); queries of the run without judgements are dropped, with a
  logged count. A run holding no judged query (an empty run included) is a :class:`UserInputError`.
- Binary measures get ``rel=`` only where ``ir_measures`` defines that parameter (not ``NumQ``, ``SDCG``, ...).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, iter_lines

logger = logging.getLogger(__name__)

_GRADED = ("nDCG", "ERR", "Judged", "alpha_nDCG")
_REL_GIVEN = re.compile(r"[(,]\s*rel\s*=")  # rel= written in a name (not min_rel= or max_rel=)
_EXAMPLES = "use ir_measures names such as nDCG@10, AP(rel=2), RR@10, R@100"


def _check_params(name: str, measure) -> None:
    """Reject parameters the measure does not take, missing required ones and invalid values (one line each)."""
    supported = measure.SUPPORTED_PARAMS
    unknown = sorted(set(measure.params) - set(supported))
    takes = ", ".join(supported) or "none"
    if unknown:
        raise UserInputError(f"measure {name!r} has no parameter {', '.join(unknown)} (it takes: {takes})",
                             fix=f"drop {', '.join(unknown)}= from {name!r}")
    cutoff = measure.params.get("cutoff")
    if cutoff is not None and not (isinstance(cutoff, int) and cutoff >= 1):  # trec_eval aborts the process on 0
        raise UserInputError(f"measure {name!r}: the cutoff must be a whole number of at least 1, got {cutoff!r}",
                             fix=f"e.g. {measure.NAME}@10")
    for key, info in supported.items():
        if key in measure.params:
            if not info.validate(measure.params[key]):
                raise UserInputError(f"measure {name!r}: invalid value {measure.params[key]!r} for {key}"
                                     + (f" ({info.desc})" if info.desc else ""), fix=_expected(key, info))
        elif info.required:
            raise UserInputError(f"measure {name!r} needs the parameter {key}"
                                 + (f" ({info.desc})" if info.desc else ""),
                                 fix=f"write it as {measure.NAME}({key}=...)")


def _expected(key: str, info) -> str:
    """What a valid value of an ``ir_measures`` parameter looks like, from its ``ParamInfo``."""
    choices = getattr(info, "choices", None)
    if isinstance(choices, (list, tuple, set, frozenset)):
        return f"{key} must be one of {', '.join(map(repr, choices))}"
    dtype = getattr(info, "dtype", None)
    if isinstance(dtype, type):
        return f"{key} must be of type {dtype.__name__}, e.g. {key}=1" + (".0" if dtype is float else "")
    return f"give a valid {key}= value"


def _with_threshold(name: str, measure, rel_threshold: int):
    """Add ``rel=T`` to a binary measure written without ``rel=`` (``AP`` -> ``AP(rel=2)``).

    Only measures whose ``ir_measures`` definition takes a ``rel`` parameter get it; graded measures (nDCG, ERR,
    ...) and measures without ``rel`` (``NumQ``, ``SDCG``, ``Compat``) are returned unchanged. An alias that
    fixes ``rel`` itself (``NumRelRet`` is ``NumRet(rel=1)``) counts as written without it.
    """
    if (rel_threshold <= 1 or _REL_GIVEN.search(name) or "rel" not in measure.SUPPORTED_PARAMS
            or str(measure.NAME).startswith(_GRADED)):
        return measure
    return measure(rel=rel_threshold)


def _supports(provider, measure) -> bool:
    """Whether an ``ir_measures`` provider (or the default pipeline) computes ``measure``; errors mean no."""
    try:
        return bool(provider.supports(measure))
    except (AssertionError, KeyError, ValueError, TypeError):
        return False


def _unsupported(name: str, measure, plain, rel_threshold: int) -> UserInputError:
    """The error for a measure that no installed ``ir_measures`` provider computes, with the likeliest fix."""
    import ir_measures

    pipeline = ir_measures.DefaultPipeline
    what = f"measure {name!r}"
    if measure != plain:
        what += f" (read as {measure} at the relevance threshold {rel_threshold})"
        if _supports(pipeline, plain):
            return UserInputError(f"{what} is not computed by any installed ir_measures provider",
                                  fix=f"write the relevance level explicitly, e.g. {plain.NAME}(rel=1)")
    installable = [p for p in pipeline.providers if not p.is_available() and _supports(p, measure)]
    if installable:
        hint = "; ".join(p.install_instructions() or p.NAME for p in installable)
        return UserInputError(f"{what} is not computed by any installed ir_measures provider",
                              fix=f"install a provider that computes it ({hint}) or {_EXAMPLES}")
    return UserInputError(f"{what} is not computed by any ir_measures provider", fix=_EXAMPLES)


def parse_metrics(names: Iterable[str], rel_threshold: int = 1) -> list:
    """Parse measure names with ``ir_measures``, applying ``rel_threshold`` to binary measures given without
    ``rel=``.

    An unknown name, a parameter the measure does not take, an invalid value, or a measure no installed
    ``ir_measures`` provider computes is a :class:`UserInputError`.
    """
    import ir_measures

    out = []
    for raw in names:
        name = raw.strip()
        try:
            plain = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError, KeyError, AttributeError) as e:
            raise UserInputError(f"unknown measure {name!r} ({e})", fix=_EXAMPLES) from None
        _check_params(name, plain)
        measure = _with_threshold(name, plain, rel_threshold)
        if not _supports(ir_measures.DefaultPipeline, measure):
            raise _unsupported(name, measure, plain, rel_threshold)
        out.append(measure)
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
                 corpus=None, *, run_path: str | Path | None = None, split: str | None = None) -> EvaluationResult:
    """Evaluate ``run`` against ``qrels`` with ``ir_measures``.

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: relevance}}``; queries with judgements define the evaluated set.
        metrics: measure names (default :func:`default_metrics`).
        rel_threshold: relevance level for binary measures given without ``rel=``.
        corpus: when given (anything supporting ``in``), documents of the run absent from it are counted and
            warned about; the run is evaluated anyway.
        run_path: the run's file, named in errors.
        split: the split the qrels belong to, named in errors.

    Raises:
        UserInputError: for a bad measure name, qrels without judgements, or a run that holds no judged query
            (an empty run included; a run covering some judged queries is evaluated, the others scoring 0).
    """
    import ir_measures

    if isinstance(metrics, str):  # one measure given bare, not split into its characters
        metrics = [metrics]
    names = list(metrics) if metrics else default_metrics(rel_threshold)
    parsed = parse_metrics(names, rel_threshold)
    labels: dict = {}  # each distinct measure -> every requested name that produced it (AP and AP(rel=1))
    for measure, name in zip(parsed, names):
        labels.setdefault(measure, []).append(name)
    for what, given in (("run", run), ("qrels", qrels)):
        if isinstance(given, (str, os.PathLike)):
            reader = "read_run" if what == "run" else "read_qrels"
            raise TypeError(f"{what} is a path ({given}); read it first with rankdistill.data.{reader}(path)")
        inner = next(iter(given.values()), {}) if isinstance(given, Mapping) else None
        if not isinstance(inner, Mapping):
            raise TypeError(f"{what} must map query ids to {{doc_id: {'score' if what == 'run' else 'relevance'}}}, "
                            f"got {type(given).__name__} of {type(inner).__name__}")
    # ids as ir_measures wants them (str), whatever the caller's mappings hold
    run = {str(q): docs for q, docs in run.items()}  # document ids become str where the run is copied below
    judged = {str(q): {str(d): r for d, r in docs.items()} for q, docs in qrels.items() if docs}
    if not judged:
        of = f" of split {split!r}" if split else ""
        raise UserInputError(f"the qrels{of} hold no judgements", fix="check the --split and the qrels file")
    unjudged = [q for q in run if q not in judged]
    if unjudged:
        logger.info("dropped %d run queries without judgements", len(unjudged))
    unknown = 0
    if corpus is not None:
        from rankdistill.data.docstore import unknown_ids

        unknown = len(unknown_ids(corpus, (str(d) for q, docs in run.items() if q in judged for d in docs)))
        if unknown:
            logger.warning("the run names %d document(s) absent from the corpus; evaluating anyway", unknown)
    sub_run = {q: {str(d): float(s) for d, s in run[q].items()} for q in judged if run.get(q)}
    nan = [(q, d) for q, docs in sub_run.items() for d, s in docs.items() if math.isnan(s)]
    if nan:  # ir_measures would rank them anywhere and score the query regardless
        raise UserInputError(f"the run has {len(nan)} NaN score(s) on judged queries, e.g. query {nan[0][0]} "
                             f"document {nan[0][1]}", path=run_path, fix="check the model or scorer that made it")
    if not sub_run:
        of_split = f" of split {split!r}" if split else ""
        if any(run.values()):
            found = (f"{len(run)} run quer{'y' if len(run) == 1 else 'ies'}, e.g. {', '.join(sorted(run)[:3])}; "
                     f"{len(judged)} judged, e.g. {', '.join(sorted(judged)[:3])}")
            what = f"no judged query{of_split} is in the run ({found})"
        else:
            what = f"the run holds no results, so no judged query{of_split} can be evaluated"
        raise UserInputError(what, path=run_path,
                             fix="evaluate against the --split the run was made for, or give a run for this split")
    missing = len(judged) - len(sub_run)
    if missing:
        logger.warning("%d judged queries have no results in the run; they score 0", missing)
    per_query: dict[str, dict[str, float]] = {name: dict.fromkeys(judged, 0.0) for name in names}
    qrels_in = {q: {d: int(r) for d, r in docs.items()} for q, docs in judged.items()}
    graded = next(((q, d, r) for q, docs in judged.items() for d, r in docs.items()
                   if float(r) != qrels_in[q][d]), None)
    if graded is not None:  # scores where grades belong: evaluate_run(qrels, run) scored a perfect 1.0
        q, d, r = graded
        raise UserInputError(f"the qrels hold a relevance of {r!r} (query {q}, document {d}); relevance grades are "
                             "integers", fix="check that the run comes first and the qrels second")
    try:
        for m in ir_measures.iter_calc(list(labels), qrels_in, sub_run):
            for name in labels[m.measure]:
                per_query[name][str(m.query_id)] = float(m.value)
    except (ValueError, KeyError, AssertionError) as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserInputError(f"ir_measures could not compute {', '.join(names)}: {detail}", fix=_EXAMPLES) from None
    means = {name: math.fsum(v.values()) / len(v) for name, v in per_query.items()}
    return EvaluationResult(means=means, per_query=per_query, judged_queries=len(judged),
                            queries_missing_from_run=missing, unjudged_queries_dropped=len(unjudged),
                            unknown_docs=unknown)


def write_per_query(per_query: Mapping[str, Mapping[str, float]], path: str | Path) -> None:
    """Write ``query_id<TAB>measure<TAB>value`` rows (with that header): the measures in the order given, each
    with its queries sorted by id."""
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
                                 path=path, line=n, fix="give a per-query file of `evaluate --per-query`")
        try:
            value = float(parts[2])
        except ValueError:
            raise UserInputError(f"value {parts[2]!r} is not a number", path=path, line=n,
                                 fix="the third field is the query's value of the measure") from None
        if not math.isfinite(value):
            raise UserInputError(f"value {parts[2]!r} is not finite", path=path, line=n,
                                 fix="give every query a finite value")
        values = out.setdefault(parts[1], {})
        if parts[0] in values:
            raise UserInputError(f"query {parts[0]!r} has a second {parts[1]} value", path=path, line=n,
                                 fix="one row per (query, measure)")
        values[parts[0]] = value
    if not out:
        raise UserInputError("per-query file holds no values", path=path)
    return out
