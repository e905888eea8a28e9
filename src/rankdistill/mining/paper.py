"""The paper's training format: triples JSONL plus a gzipped JSON teacher file.

Each line of the triples file is ``{"query_id": q, "doc_id_a": positive, "doc_id_b": [negatives...]}`` (the
keys read by the ``rankers`` library the paper's code uses; ``doc_id_b`` may also be a single id), and the
teacher file is ``{qid: {docid: score}}``, gzipped JSON.

Export writes one line per group with its first (most relevant) positive, or one line per positive with
``all_positives``. Import merges lines of the same query into one group: positives and negatives in
first-seen order, a document that is a positive on any line never counted as a negative.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Container, Iterable, Mapping
from pathlib import Path

from rankdistill.data.docstore import unknown_ids
from rankdistill.data.groups import Group
from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, iter_json_objects, json_id, require_file

logger = logging.getLogger(__name__)


def write_paper_triples(groups: Iterable[Group], path: str | Path, all_positives: bool = False) -> int:
    """Write groups as paper triples; returns the number of lines. Groups without positives are left out."""
    n = 0
    no_positive = several = 0
    with atomic_write(path) as fh:
        for g in groups:
            if not g.positive_ids:
                no_positive += 1
                continue
            if len(g.positive_ids) > 1:
                several += 1
            for pos in g.positive_ids if all_positives else g.positive_ids[:1]:
                fh.write(json.dumps({"query_id": g.query_id, "doc_id_a": pos, "doc_id_b": list(g.negative_ids)},
                                    ensure_ascii=False) + "\n")
                n += 1
    if no_positive:
        logger.warning("%d groups without a positive were left out of %s", no_positive, path)
    if several and not all_positives:
        logger.info("%d groups have several positives; each line keeps the first (use --all-positives for one "
                    "line per positive)", several)
    return n


def _ids(value: object, key: str, path: Path, line: int) -> list[str]:
    if isinstance(value, list):
        return [json_id(v, key, path, line) for v in value]
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    raise UserInputError(f"{key} must be a doc id or a list of doc ids", path=path, line=line,
                         fix='e.g. "doc_id_b": ["d1", "d2"]')


def read_paper_triples(path: str | Path, strategy: str = "paper", queries: Container[str] | None = None,
                       corpus: Container[str] | None = None,
                       judged: Mapping[str, Container[str]] | None = None) -> list[Group]:
    """Read paper triples into groups (one per query, in first-seen order).

    When ``queries`` / ``corpus`` are given, unknown query or doc ids raise naming the file and line. A line
    names one positive, so a query's other judged relevant documents may stand among its negatives (MS MARCO
    train queries with several positives): when ``judged`` (``{query_id: relevant doc ids}``, e.g.
    :meth:`~rankdistill.data.dataset.Dataset.judged_relevant`) is given, they leave the negatives, with a
    logged count.
    """
    path = require_file(path, "triples file")
    order: list[str] = []
    pos: dict[str, dict[str, None]] = {}
    neg: dict[str, dict[str, None]] = {}
    for n, obj in iter_json_objects(path, fix="each line must be {\"query_id\", \"doc_id_a\", \"doc_id_b\"}"):
        if not {"query_id", "doc_id_a", "doc_id_b"} <= set(obj):
            raise UserInputError("expected an object with query_id, doc_id_a and doc_id_b", path=path, line=n,
                                 fix="give the paper's triples (one query, positive and negatives per line)")
        qid = json_id(obj["query_id"], "query_id", path, n)
        a = _ids(obj["doc_id_a"], "doc_id_a", path, n)
        b = _ids(obj["doc_id_b"], "doc_id_b", path, n)
        if queries is not None and qid not in queries:
            raise UserInputError(f"query id {qid!r} is not in the dataset's queries", path=path, line=n,
                                 fix="give the --dataset (and --split) the triples were made for")
        if corpus is not None:
            bad = unknown_ids(corpus, (*a, *b))
            if bad:
                raise UserInputError(f"document id {bad[0]!r} is not in the corpus", path=path, line=n,
                                 fix="give the --dataset the triples were made for")
        if qid not in pos:
            order.append(qid)
            pos[qid], neg[qid] = {}, {}
        pos[qid].update(dict.fromkeys(a))
        neg[qid].update(dict.fromkeys(b))
    if not order:
        raise UserInputError("the triples file holds no lines", path=path)
    groups = []
    n_judged = 0
    for q in order:
        relevant = judged.get(q, ()) if judged is not None else ()
        negatives = [d for d in neg[q] if d not in pos[q]]
        kept = [d for d in negatives if d not in relevant]
        n_judged += len(negatives) - len(kept)
        groups.append(Group(q, list(pos[q]), kept, strategy, 0))
    if n_judged:
        logger.warning("%d negatives of %s are judged relevant to their query in the dataset's qrels and were left "
                       "out of the negatives", n_judged, path)
    return groups
