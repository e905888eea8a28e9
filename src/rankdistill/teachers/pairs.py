"""The (query, document) pairs a groups file asks a teacher to score, checked against the dataset."""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path

from rankdistill.data.groups import Group, iter_groups
from rankdistill.errors import UserInputError
from rankdistill.io import require_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupPairs:
    """The groups of a file and their unique ``(query_id, doc_id)`` pairs (positives first, in file order)."""

    groups: list[Group]
    pairs: list[tuple[str, str]]
    empty_pools: int


def read_group_pairs(path: str | Path, queries: Mapping[str, str] | Container[str],
                     corpus: Container[str]) -> GroupPairs:
    """Read a groups file, checking every query id and doc id; unknown ones raise naming file and line.

    A group without negatives is kept (its positives are still scored) and counted in ``empty_pools``.
    """
    path = require_file(path, "groups file")
    groups: list[Group] = []
    pairs: dict[tuple[str, str], None] = {}
    empty = 0
    for n, g in iter_groups(path):
        if g.query_id not in queries:
            raise UserInputError(f"query id {g.query_id!r} is not in the dataset's queries", path=path, line=n,
                                 fix="mine the groups from the same dataset (and split)")
        for did in (*g.positive_ids, *g.negative_ids):
            if did not in corpus:
                raise UserInputError(f"document id {did!r} (query {g.query_id!r}) is not in the corpus",
                                     path=path, line=n, fix="mine the groups from the same dataset")
            pairs[(g.query_id, did)] = None
        if not g.negative_ids:
            empty += 1
        groups.append(g)
    if not groups:
        raise UserInputError("the groups file holds no groups", path=path, fix="mine groups with `rankdistill mine`")
    if empty:
        logger.warning("%s: %d of %d groups have an empty negative pool", path, empty, len(groups))
    return GroupPairs(groups, list(pairs), empty)


def dataset_queries(dataset, split: str | None = None) -> dict[str, str]:
    """``{query_id: text}`` of one split, or of every split when ``split`` is None (first text wins)."""
    if split is not None:
        return dict(dataset.all_queries(split))
    out: dict[str, str] = {}
    conflicts = 0
    for name in dataset.split_names():
        for qid, text in dataset.all_queries(name).items():
            if qid in out and out[qid] != text:
                conflicts += 1
                continue
            out.setdefault(qid, text)
    if conflicts:
        logger.warning("%d query ids have different texts in different splits; the first split's text is used "
                       "(name one with --split)", conflicts)
    return out
