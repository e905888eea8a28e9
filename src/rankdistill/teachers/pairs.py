"""The (query, document) pairs a groups file asks a teacher to score, checked against the dataset."""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rankdistill.data.docstore import with_unknown_ids
from rankdistill.data.groups import Group, iter_groups
from rankdistill.errors import UserInputError
from rankdistill.io import require_file

logger = logging.getLogger(__name__)


PAIR_BLOCK = 1_000_000
"""Unique pairs a groups file gives to scoring at a time: MS MARCO's 500k training queries with pools of 100 are
50M pairs, which as Python tuples (with the checks of which the store lacks) would take 15 GB or more."""

Pair = tuple[str, str]


@dataclass(frozen=True)
class GroupPairs:
    """The (query, document) pairs of a checked groups file, given a block at a time (:meth:`blocks`).

    A block holds at most ``block_pairs`` unique pairs (positives first, in file order), plus the rest of the
    query it reached that size in: a block ends only where the query id changes, so a file whose groups of a
    query are consecutive (as ``rankdistill mine`` writes them) never asks for a pair twice. ``pairs`` is the
    sum of the blocks' sizes.
    """

    path: Path
    groups: int
    pairs: int
    empty_pools: int
    block_pairs: int = PAIR_BLOCK

    def blocks(self) -> Iterator[list[Pair]]:
        """The pairs, a block at a time, read from the file again."""
        yield from _blocks((g for _, g in iter_groups(self.path)), self.block_pairs)

    def __iter__(self) -> Iterator[Pair]:
        for block in self.blocks():
            yield from block


def _blocks(groups: Iterable[Group], block_pairs: int) -> Iterator[list[Pair]]:
    """Cut the groups' unique pairs into blocks of ``block_pairs`` or more, where the query id changes."""
    block: dict[Pair, None] = {}
    last = None
    for g in groups:
        if g.query_id != last and len(block) >= block_pairs:
            yield list(block)
            block = {}
        last = g.query_id
        for did in (*g.positive_ids, *g.negative_ids):
            block[(g.query_id, did)] = None
    if block:
        yield list(block)


def read_group_pairs(path: str | Path, queries: Mapping[str, str] | Container[str],
                     corpus: Container[str], block_pairs: int | None = None) -> GroupPairs:
    """Check a groups file (every query id and doc id; unknown ones raise naming file and line) without holding
    its pairs, which :meth:`GroupPairs.blocks` then reads a block at a time.

    A group without negatives is kept (its positives are still scored) and counted in ``empty_pools``.
    ``block_pairs`` defaults to :data:`PAIR_BLOCK`.
    """
    path = require_file(path, "groups file")
    block_pairs = PAIR_BLOCK if block_pairs is None else block_pairs
    if block_pairs < 1:
        raise ValueError(f"block_pairs must be at least 1, got {block_pairs}")
    seen = {"groups": 0, "empty": 0}

    def checked() -> Iterator[Group]:
        for (n, g), bad in with_unknown_ids(iter_groups(path), lambda ng: (*ng[1].positive_ids,
                                                                             *ng[1].negative_ids), corpus):
            if g.query_id not in queries:
                raise UserInputError(f"query id {g.query_id!r} is not in the dataset's queries", path=path,
                                     line=n, fix="mine the groups from the same dataset (and split)")
            if bad:
                raise UserInputError(f"document id {bad[0]!r} (query {g.query_id!r}) is not in the corpus",
                                     path=path, line=n, fix="mine the groups from the same dataset")
            seen["groups"] += 1
            seen["empty"] += not g.negative_ids
            yield g

    total = sum(len(block) for block in _blocks(checked(), block_pairs))
    groups, empty = seen["groups"], seen["empty"]
    if not groups:
        raise UserInputError("the groups file holds no groups", path=path, fix="mine groups with `rankdistill mine`")
    if empty:
        logger.warning("%s: %d of %d groups have an empty negative pool", path, empty, groups)
    return GroupPairs(path, groups, total, empty, block_pairs)


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
