"""The miner: runs a strategy and applies the shared logic of :mod:`rankdistill.mining.pool` to every query.

Steps, for the training queries of a split that have a judged positive, in blocks of :data:`MINING_BLOCK`
queries (so that memory stays bounded at MS MARCO's 500k queries, whose BM25 top-200 alone is 100M pairs):

1. the strategy proposes candidates for the block's queries at once (a first stage searches in one batch);
2. rank window, exclusions (judged relevant documents: a positive is never a negative), and the optional
   false-negative guard (one batched teacher call per block);
3. the pool (``pool_size`` negatives) is sampled with the query's own random stream;
4. queries with fewer candidates than the strategy's fill target (:meth:`Strategy.fill_target`: the pool size;
   for the ensemble's filter fusion only the ``group_size - 1`` a group needs) are topped up with random
   documents to it (guarded too) or skipped (``on_short``); both are counted and logged.

Determinism: every random choice comes from :func:`rankdistill.mining.seeding.query_rng` (seed, query id,
use), and candidates are ranked with ties broken by doc id, so identical inputs and seed give identical groups.
Nothing depends on which block a query is in: every step is per query.

Fan-out: given an executor (``mine --executor ray`` or ``processes``), a strategy that does not ask the
teacher (random, bm25, dense, run) mines one shard of queries per worker (:func:`mine_shard`), each task
opening the dataset and the first stage once and letting them go when done; the first stage is built here
first, so that the workers only load its cached index (BM25) or embeddings (dense), and the queries stay in
this process where it cannot be cached (BM25 over an ir_datasets corpus). Since every step is per query, the
groups are the same as mined in one process (dense: up to the float rounding of how the queries are batched
for encoding). With the teacher, its scoring is what fans out (:class:`~rankdistill.teachers.engine.TeacherScores`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rankdistill.data.groups import Group
from rankdistill.errors import UserInputError
from rankdistill.mining.base import MiningConfig, MiningQuery, Strategy, get_strategy
from rankdistill.mining.context import MiningContext
from rankdistill.mining.pool import (
    draw_random,
    exclude,
    false_negative_guard,
    guard_threshold,
    rank_window,
    sample,
)
from rankdistill.mining.seeding import query_rng

logger = logging.getLogger(__name__)

TOPUP_ROUNDS = 4
"""Top-up draws per short query when the false-negative guard may drop drawn documents."""

MINING_BLOCK = 10_000
"""Queries mined together: their first-stage rankings, teacher scores and pools are in memory at once."""

SHARDS = 16
"""Shards of queries for an executor that does not say how many workers it has (Ray); a process pool gets one
per worker. Each shard is one task that opens the first stage once and mines its queries in blocks."""


@dataclass(frozen=True)
class MiningResult:
    """The mined groups, the counts of what happened, and the strategy's resolved settings."""

    groups: list[Group]
    counts: dict[str, int]
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    shards: int = 0
    """Shards of queries mined on an executor's workers (0: mined in this process)."""


def mining_queries(dataset, split: str, min_relevance: int | None = None,
                   max_queries: int | None = None) -> tuple[list[MiningQuery], dict[str, int]]:
    """The split's queries with at least one judged positive (relevance >= the split's threshold) in the corpus.

    Positives are ordered by relevance (highest first), then qrels order. Every positive and every document
    judged with relevance > 0 is excluded from the negatives, including those below the positive threshold.
    (:meth:`MiningConfig.validate` refuses a ``min_relevance`` below 1: grade 0 means judged not relevant.)

    ``max_queries`` keeps the first that many usable queries, and the split is read only as far as they go
    (the counts of queries without positives and of positives not in the corpus are then of that part): the
    positives are looked up in the corpus in batches (:func:`~rankdistill.data.docstore.with_unknown_ids`),
    which for MS MARCO's 500k training queries over an ir_datasets corpus is most of this function's time.
    """
    from rankdistill.data.docstore import with_unknown_ids

    queries = dataset.queries(split)
    qrels = dataset.qrels(split)
    threshold = dataset.rel_threshold(split) if min_relevance is None else min_relevance
    out: list[MiningQuery] = []
    counts = {"queries": len(queries), "queries_without_positives": 0, "positives_not_in_corpus": 0}
    if max_queries is not None and max_queries <= 0:
        return out, counts

    def judged(item: tuple[str, str]) -> tuple[str, str, dict[str, int], list[str]]:
        qid, text = item
        rels = qrels.get(qid, {})
        return qid, text, rels, [d for d, r in sorted(rels.items(), key=lambda kv: -kv[1]) if r >= threshold]

    # with --max-queries, batches of a few times the ids the queries kept may need (a query usually has one
    # positive): the split is then read about as far as they go, not a million ids ahead
    batch = None if max_queries is None else max(1024, 4 * max_queries)
    for (qid, text, rels, judged_pos), missing in with_unknown_ids(map(judged, queries.items()),
                                                                    lambda item: item[3], dataset.corpus, batch):
        gone = set(missing)
        positives = [d for d in judged_pos if d not in gone]
        counts["positives_not_in_corpus"] += len(judged_pos) - len(positives)
        if not positives:
            counts["queries_without_positives"] += 1
            continue
        excluded = frozenset(judged_pos).union(d for d, r in rels.items() if r > 0)  # a positive is never a negative
        out.append(MiningQuery(qid, text, tuple(positives), excluded))
        if max_queries is not None and len(out) >= max_queries:
            break
    return out, counts


class Miner:
    """Mine groups with the strategy ``context.config.strategy``."""

    def __init__(self, context: MiningContext, executor=None) -> None:
        self.context = context
        self.executor = executor
        """An executor of :mod:`rankdistill.experiments.executors` to mine the blocks on (see the module)."""
        self.config: MiningConfig = context.config
        self.config.validate()
        self.strategy: Strategy = get_strategy(self.config.strategy)(context)
        self.config.check_window(self.strategy)
        if self.strategy.needs_teacher and context.teacher is None:
            raise UserInputError(f"--strategy {self.config.strategy} needs a teacher", fix="give --teacher MODEL")
        if self.config.fn_margin is not None and context.teacher is None:
            raise UserInputError("the false-negative guard (--fn-margin) needs a teacher", fix="give --teacher MODEL")

    @property
    def uses_teacher(self) -> bool:
        """Whether mining asks the teacher anything: the strategy ranks with it, or the false-negative guard."""
        return self.strategy.needs_teacher or self.config.fn_margin is not None

    def _guard(self, proposals: dict[str, list[str]], queries: dict[str, MiningQuery],
               counts: dict[str, int]) -> dict[str, list[str]]:
        margin = self.config.fn_margin
        if margin is None:
            return proposals
        pairs = [(qid, d) for qid, docs in proposals.items() for d in (*queries[qid].positives, *docs)]
        scores = self.context.teacher.get(pairs)
        out = {}
        for qid, docs in proposals.items():
            threshold = guard_threshold([scores[(qid, p)] for p in queries[qid].positives], margin)
            kept, dropped = false_negative_guard(docs, {d: scores[(qid, d)] for d in docs}, threshold)
            counts["false_negatives_dropped"] += len(dropped)
            out[qid] = kept
        return out

    def run(self) -> MiningResult:
        start = time.perf_counter()
        c = self.config
        queries, counts = mining_queries(self.context.dataset, self.context.split, c.min_relevance, c.max_queries)
        if not queries:
            raise UserInputError(f"no query of split {self.context.split!r} has a judged positive in the corpus",
                                 fix="check --split and --min-relevance")
        counts.update(queries_mined=len(queries), false_negatives_dropped=0, queries_short=0, queries_topped_up=0,
                      random_negatives_added=0, queries_short_after_topup=0, queries_skipped=0)
        logger.info("mining %d queries with strategy %s", len(queries), c.strategy)
        max_rank = c.max_rank if c.max_rank is not None else self.strategy.default_max_rank()
        if max_rank is not None and self.strategy.ranked:  # every ranking is cut at --depth: the window too
            max_rank = min(max_rank, c.depth)
        counts["candidates_total"] = 0
        pools: dict[str, list[str]] = {}
        if self.executor is not None and not self.uses_teacher and self._first_stage_shareable():
            short, shards = self._fan_out(queries, max_rank, pools, counts)
        else:
            short, shards = self._mine_blocks(queries, max_rank, pools, counts), 0
        counts["queries_short"] = len(short)
        target = self.strategy.fill_target()
        if short and c.on_short == "skip":
            counts["queries_skipped"] = len(short)
            logger.warning("%d of %d queries had fewer than %d candidates and were skipped (--on-short skip)",
                           len(short), len(queries), target)
        elif short:
            still = counts["queries_short_after_topup"]
            logger.warning("%d of %d queries had fewer than %d candidates and were topped up with %d random "
                           "documents (--on-short topup)%s", len(short), len(queries), target,
                           counts["random_negatives_added"],
                           f"; {still} of them are still short (too few documents to draw from)" if still else "")
        empty = [qid for qid, pool in pools.items() if not pool]
        for qid in empty:
            del pools[qid]
        counts["queries_empty_pool"] = len(empty)
        if empty:
            logger.warning("%d queries ended with an empty negative pool (every candidate was judged relevant or "
                           "dropped) and were left out", len(empty))
        groups = [Group(q.query_id, list(q.positives), pools[q.query_id], c.strategy, c.seed)
                  for q in queries if q.query_id in pools]
        if not groups:
            raise UserInputError(f"no groups mined: none of the {len(queries)} queries kept a negative "
                                 f"({counts['queries_skipped']} skipped as short, {len(empty)} with an empty pool)",
                                 fix="use --on-short topup, a larger --depth, or a smaller --fn-margin")
        counts["groups"] = len(groups)
        counts["negatives_total"] = sum(len(g.negative_ids) for g in groups)
        counts["groups_below_group_size"] = sum(1 for g in groups if len(g.negative_ids) < c.group_size - 1)
        if counts["groups_below_group_size"]:  # such a group trains with fewer documents than the others
            logger.warning("%d of %d groups have fewer than the %d negatives a group of %d needs",
                           counts["groups_below_group_size"], len(groups), c.group_size - 1, c.group_size)
        counts.update(self.strategy.counts)
        settings = {**self.strategy.settings(), "max_rank": max_rank if self.strategy.ranked else None}
        return MiningResult(groups, counts, settings, time.perf_counter() - start, shards)

    def _first_stage_shareable(self) -> bool:
        """Build the first stage here, once, so that the workers find it cached; ``False`` (mine in this
        process) where it cannot be cached: BM25 over a corpus with no folder to keep its index in (an
        ir_datasets corpus that names no documents file, or a folder that cannot be written) would be indexed
        again by every worker. (Ray workers on other machines read their own cache root: each machine indexes
        an ir_datasets corpus once.)"""
        self.strategy.candidates([])
        bm25 = self.context._retrievers.get("bm25")
        if bm25 is not None and not bm25.cached:
            logger.info("the BM25 index of %s is not kept on disk, so each worker would build it again: mining in "
                        "this process", self.context.dataset.name)
            return False
        return True

    def _fan_out(self, queries: list[MiningQuery], max_rank: int | None, pools: dict[str, list[str]],
                 counts: dict[str, int]) -> tuple[list[MiningQuery], int]:
        """Mine ``queries`` in shards on :attr:`executor` (see the module); returns the short queries and the
        number of shards."""
        c = self.config
        self.context._retrievers.clear()  # the workers search; this process need not hold an index meanwhile
        n = max(1, min(getattr(self.executor, "workers", SHARDS), len(queries)))
        size = -(-len(queries) // n)
        shards = [queries[i:i + size] for i in range(0, len(queries), size)]
        # paths absolute: a Ray worker on another node does not share this process's working folder
        c = dataclasses.replace(c, candidates=_absolute(c.candidates), systems=tuple(map(_absolute, c.systems)),
                                embedding_cache=_absolute(c.embedding_cache),
                                encoder=_absolute(c.encoder) if c.encoder and Path(c.encoder).is_dir() else c.encoder)
        dataset = self.context.dataset.with_absolute_paths()
        tasks = [(c, dataset, self.context.split, shard, max_rank) for shard in shards]
        bar = tqdm(total=len(queries), desc=f"mining ({c.strategy}, {self.executor.name})", unit=" queries",
                   disable=not self.context.show_progress or None)
        short: set[str] = set()

        def done(i: int, result: ShardResult) -> None:
            pools.update(result.pools)
            short.update(result.short)
            for k, v in result.counts.items():
                counts[k] = counts.get(k, 0) + v
            for k, v in result.strategy_counts.items():
                self.strategy.counts[k] = self.strategy.counts.get(k, 0) + v
            bar.update(len(shards[i]))

        try:
            self.executor.map(mine_shard, tasks, done)
        finally:
            bar.close()
        return [q for q in queries if q.query_id in short], len(shards)

    def _mine_blocks(self, queries: list[MiningQuery], max_rank: int | None, pools: dict[str, list[str]],
                     counts: dict[str, int]) -> list[MiningQuery]:
        """Mine ``queries`` here, :data:`MINING_BLOCK` at a time, into ``pools``; returns the short ones."""
        by_id = {q.query_id: q for q in queries}
        blocks = [queries[i:i + MINING_BLOCK] for i in range(0, len(queries), MINING_BLOCK)]
        short: list[MiningQuery] = []
        for block in tqdm(blocks, desc=f"mining ({self.config.strategy})", unit=" blocks",
                          disable=len(blocks) == 1 or not self.context.show_progress or None):
            short.extend(self._mine_block(block, by_id, max_rank, pools, counts))
        return short

    def _mine_block(self, block: list[MiningQuery], by_id: dict[str, MiningQuery], max_rank: int | None,
                    pools: dict[str, list[str]], counts: dict[str, int]) -> list[MiningQuery]:
        """Mine one block of queries into ``pools`` (short ones skipped or topped up); returns the short ones."""
        c = self.config
        target = self.strategy.fill_target()
        proposed = self.strategy.candidates(block)
        candidates = {}
        for q in block:
            docs = proposed.get(q.query_id, [])
            if self.strategy.ranked:
                docs = rank_window(docs, c.min_rank, max_rank)
            candidates[q.query_id] = exclude(docs, q.excluded)
        del proposed
        counts["candidates_total"] += sum(len(v) for v in candidates.values())
        guarded = self._guard(candidates, by_id, counts)
        mined = {qid: sample(docs, c.pool, c.sample, query_rng(c.seed, qid, "sample"))
                 for qid, docs in guarded.items()}
        short = [q for q in block if len(mined[q.query_id]) < target]
        if short and c.on_short == "skip":
            for q in short:
                del mined[q.query_id]
        elif short:
            self._top_up(short, mined, candidates, counts)
        pools.update(mined)
        return short

    def _top_up(self, short: list[MiningQuery], pools: dict[str, list[str]], candidates: dict[str, list[str]],
                counts: dict[str, int]) -> None:
        """Fill short pools with uniformly drawn documents; with the guard on, drawn documents are guarded too
        and up to :data:`TOPUP_ROUNDS` rounds draw replacements for the dropped ones."""
        c = self.config
        target = self.strategy.fill_target()
        guard = c.fn_margin is not None
        rngs = {q.query_id: query_rng(c.seed, q.query_id, "topup") for q in short}
        taken = {q.query_id: set(pools[q.query_id]) | set(candidates[q.query_id]) | q.excluded for q in short}
        todo = list(short)
        for _ in range(TOPUP_ROUNDS if guard else 1):
            draws: dict[str, list[str]] = {}
            for q in todo:
                need = target - len(pools[q.query_id])
                # with the guard on, draw twice what is missing: some draws may be dropped as false negatives
                draws[q.query_id] = draw_random(rngs[q.query_id], self.context.corpus_ids, need * 2 if guard else need,
                                                taken[q.query_id])
                taken[q.query_id].update(draws[q.query_id])
            kept = self._guard(draws, {q.query_id: q for q in todo}, counts)
            for q in todo:
                added = kept[q.query_id][:target - len(pools[q.query_id])]
                pools[q.query_id] = pools[q.query_id] + added
                counts["random_negatives_added"] += len(added)
            todo = [q for q in todo if len(pools[q.query_id]) < target and draws[q.query_id]]
            if not todo:
                break
        counts["queries_topped_up"] += len(short)
        counts["queries_short_after_topup"] += sum(1 for q in short if len(pools[q.query_id]) < target)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).absolute())


@dataclass(frozen=True)
class ShardResult:
    """What :func:`mine_shard` sends back: the shard's pools, its short query ids, and the counts it added."""

    pools: dict[str, list[str]]
    short: list[str]
    counts: dict[str, int]
    strategy_counts: dict[str, int]


def mine_shard(config: MiningConfig, dataset, split: str, shard: list[MiningQuery],
               max_rank: int | None) -> ShardResult:
    """Mine one shard of queries in a worker (a Ray task or a pool process) with :meth:`Miner._mine_blocks`, as
    the driver does without an executor. The worker opens the dataset (which arrives without its
    opened store, :meth:`Dataset.__getstate__`) and the first stage itself, and lets both go when the shard is
    done: nothing outlives the task, so a worker that later runs something else holds no index, and a later
    mining run never meets a stale one."""
    miner = Miner(MiningContext(config, dataset, split, None, show_progress=False))
    pools: dict[str, list[str]] = {}
    counts: Counter[str] = Counter()  # whatever the blocks add to, summed over the shards by the driver
    short = miner._mine_blocks(shard, max_rank, pools, counts)
    return ShardResult(pools, [q.query_id for q in short], dict(counts), dict(miner.strategy.counts))
