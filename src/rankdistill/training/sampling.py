"""Deterministic training plan: which groups and which negatives each optimizer step sees.

- Each epoch visits the queries in an order drawn from ``hash(seed, "order", epoch)``.
- Each query's group for an epoch is its positive (one of its positives, drawn) followed by
  ``group_size - 1`` negatives drawn without replacement from its pool, with the seed
  ``hash(seed, query id, epoch)`` (Tevatron's epoch-rotating negatives): reproducible without storing
  samples, independent of the process count, and never containing a positive as a negative.
- Length bucketing: the epoch order is cut into windows of ``bucket_steps`` optimizer steps; within a window
  groups are sorted by their longest document, cut into steps, and the steps shuffled (seeded), so a batch
  pads to similar lengths without the order becoming length-sorted.
- Step ``k`` of the whole run is step ``k mod steps_per_epoch`` of epoch ``k // steps_per_epoch``: the plan
  is a pure function of the step index, which is all a checkpoint needs to store.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field


def hashed_seed(*parts: object) -> int:
    """A 64-bit seed from the parts' text (stable across processes and Python versions, unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class TrainGroup:
    """A cleaned training query: its positives and a pool of negatives that contains no positive."""

    query_id: str
    positive_ids: tuple[str, ...]
    negative_ids: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class SampledGroup:
    """The documents of one group at one step: positive first."""

    query_id: str
    doc_ids: tuple[str, ...]
    positive_ids: tuple[str, ...] = ()
    """Every positive of the query (not only the one drawn): never an in-batch negative of it."""
    pool_positions: tuple[int, ...] = field(default=(), compare=False)
    """Where ``doc_ids`` sit in the query's :class:`TrainGroup`, positives first then negatives (the draw of
    :func:`sample_indices`); :meth:`TrainingPlan.pairs_seen` counts distinct pairs from them."""


def sample_indices(group: TrainGroup, group_size: int, seed: int, epoch: int) -> tuple[int, list[int]]:
    """The draw of :func:`sample_group` as positions: the positive's in ``group.positive_ids`` and the
    negatives' in ``group.negative_ids``, with the (seed, query, epoch) hashed seed."""
    rng = random.Random(hashed_seed(seed, group.query_id, epoch))
    n_pos = len(group.positive_ids)
    positive = 0 if n_pos == 1 else rng.randrange(n_pos)  # what rng.choice(positive_ids) draws
    return positive, rng.sample(range(len(group.negative_ids)), group_size - 1)


def sample_group(group: TrainGroup, group_size: int, seed: int, epoch: int) -> SampledGroup:
    """Draw one positive and ``group_size - 1`` negatives with the (seed, query, epoch) hashed seed."""
    positive, negatives = sample_indices(group, group_size, seed, epoch)
    n_pos = len(group.positive_ids)
    return SampledGroup(group.query_id, (group.positive_ids[positive], *(group.negative_ids[i] for i in negatives)),
                        tuple(group.positive_ids), (positive, *(n_pos + i for i in negatives)))


class TrainingPlan:
    """The sequence of global batches (lists of :class:`SampledGroup`), one per optimizer step."""

    def __init__(self, groups: Sequence[TrainGroup], *, group_size: int, groups_per_step: int, seed: int,
                 bucket_steps: int = 1, length_of: Callable[[SampledGroup], int] | None = None) -> None:
        if len(groups) < groups_per_step:
            raise ValueError(f"{len(groups)} groups cannot fill one step of {groups_per_step}")
        self.groups = list(groups)
        self.group_size = group_size
        self.groups_per_step = groups_per_step
        self.seed = seed
        self.bucket_steps = max(1, bucket_steps)
        self.length_of = length_of
        self._epoch_cache: tuple[int, list[SampledGroup], dict[int, list[list[SampledGroup]]]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Full steps per pass over the queries (the remainder of an epoch is left out)."""
        return len(self.groups) // self.groups_per_step

    def _window(self, epoch: int, w: int) -> list[list[SampledGroup]]:
        """The steps of bucketing window ``w`` of ``epoch`` (memoised for the current epoch). Windows are built
        when a step of theirs is asked for: sorting a window asks for its documents' lengths, and a budget of a
        few steps has tokenised only the documents of the windows it reaches (:meth:`groups_within`)."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self._sampled(epoch, self.steps_per_epoch * self.groups_per_step), {})
        _, sampled, windows = self._epoch_cache
        if w not in windows:
            size = self.bucket_steps * self.groups_per_step
            chunk = sampled[w * size:(w + 1) * size]
            if self.bucket_steps > 1 and self.length_of is not None:
                chunk = sorted(chunk, key=self.length_of, reverse=True)
            cut = [chunk[i:i + self.groups_per_step] for i in range(0, len(chunk), self.groups_per_step)]
            if self.bucket_steps > 1:
                random.Random(hashed_seed(self.seed, "buckets", epoch, w)).shuffle(cut)
            windows[w] = cut
        return windows[w]

    def _sampled(self, epoch: int, n: int) -> list[SampledGroup]:
        """The first ``n`` groups of the epoch's query order, sampled, before length bucketing."""
        order = list(range(len(self.groups)))
        random.Random(hashed_seed(self.seed, "order", epoch)).shuffle(order)
        return [sample_group(self.groups[i], self.group_size, self.seed, epoch) for i in order[:n]]

    def groups_within(self, steps: int) -> Iterator[SampledGroup]:
        """Every sampled group the first ``steps`` steps can hold, found without the documents' lengths (so
        before tokenising): whole epochs, and of the last one the bucketing windows its steps reach (bucketing
        reorders steps within a window only). A budget of a few steps over a large training set needs only
        those groups' documents, not an epoch's."""
        window = self.bucket_steps * self.groups_per_step
        for epoch in range(-(-steps // self.steps_per_epoch)):
            left = min(self.steps_per_epoch, steps - epoch * self.steps_per_epoch)
            n = min(self.steps_per_epoch * self.groups_per_step, -(-left * self.groups_per_step // window) * window)
            yield from self._sampled(epoch, n)

    def step(self, index: int) -> list[SampledGroup]:
        """The global batch of optimizer step ``index`` (0-based, over the whole run)."""
        epoch, k = divmod(index, self.steps_per_epoch)
        w, j = divmod(k, self.bucket_steps)
        return self._window(epoch, w)[j]

    def pairs_seen(self, steps: int) -> int:
        """How many distinct (query, document) pairs the first ``steps`` steps hold (the teacher scores
        consumed). Each query's draws are kept as a bit mask over its pool, not as a set of (query, document)
        pairs: about 3 GB for a 40M-document budget."""
        masks: dict[str, int] = {}
        for index in range(steps):
            for g in self.step(index):
                bits = 0
                for j in g.pool_positions:
                    bits |= 1 << j
                masks[g.query_id] = masks.get(g.query_id, 0) | bits
        return sum(m.bit_count() for m in masks.values())


def shard(step_groups: Sequence[SampledGroup], *, micro: int, rank: int, world_size: int,
          batch_size: int) -> list[SampledGroup]:
    """The groups of one device's micro-batch: micro-batch ``micro`` of ``rank`` (``world_size`` devices)."""
    start = (micro * world_size + rank) * batch_size
    return list(step_groups[start:start + batch_size])
