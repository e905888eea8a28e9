"""Training data: groups validated against the dataset and the score store, and batches built from them.

:func:`load_training_data` reads the groups file, checks every query and document, cleans each pool (no
positive among the negatives, nor any document the split's qrels judge relevant, no repeats), looks up the
teacher scores and enforces the group size, with errors that name the file, line and fix. :class:`BatchBuilder`
turns a list of :class:`~rankdistill.training.sampling.SampledGroup` into a :class:`TrainBatch` from cached
token ids, and :class:`StepBatches` serves one device's micro-batches per optimizer step to a ``DataLoader``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rankdistill.data.docstore import with_unknown_ids
from rankdistill.data.groups import iter_groups
from rankdistill.errors import UserInputError
from rankdistill.models.inputs import TokenBatch
from rankdistill.training.config import TrainConfig
from rankdistill.training.sampling import SampledGroup, TrainGroup, TrainingPlan, hashed_seed, shard
from rankdistill.training.tokens import InputTemplate, TokenCache, encode_pairs, encode_singles

logger = logging.getLogger(__name__)


class PoolScores:
    """The teacher's scores of each training query's documents (its positives and its negative pool): one
    float32 array per query, aligned with the group's own document ids.

    A dict entry per (query, document) pair costs about 150 bytes of Python objects: MS MARCO's 500k queries
    with pools of 100 made 50M of them (about 8 GB, and as much again in each data-loader worker, whose
    reference counts touch the pages). Arrays take 4 bytes a score.
    """

    def __init__(self) -> None:
        self._ids: dict[str, tuple[str, ...]] = {}
        self._scores: dict[str, np.ndarray] = {}

    def add(self, query_id: str, doc_ids: tuple[str, ...], scores: Sequence[float]) -> None:
        self._ids[query_id] = doc_ids
        self._scores[query_id] = np.asarray(scores, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, query_id: object) -> bool:
        return query_id in self._ids

    def lookup(self, query_id: str, doc_ids: Sequence[str]) -> list[float]:
        """The scores of ``doc_ids`` (documents of the query's group) in that order."""
        where = {d: i for i, d in enumerate(self._ids[query_id])}
        return self._scores[query_id][[where[d] for d in doc_ids]].tolist()


SCORE_BLOCK = 2_000
"""Groups whose teacher scores are read from the store at a time."""


@dataclass
class TrainingData:
    """Validated groups, query texts, teacher scores (when the loss needs them) and what was dropped."""

    groups: list[TrainGroup]
    queries: dict[str, str]
    corpus: object
    teacher: PoolScores | None = None
    teacher_id: str | None = None
    teacher_info: dict = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def _examples(items: Sequence[str], n: int = 3) -> str:
    shown = "; ".join(items[:n])
    return shown + ("; ..." if len(items) > n else "")


def load_training_data(config: TrainConfig, dataset=None) -> TrainingData:
    """Read and validate the groups (and teacher scores) of ``config``; ``dataset`` skips loading it again."""
    from rankdistill.data import load_dataset

    dc = config.data
    ds = dataset if dataset is not None else load_dataset(dc.dataset, data_dir=dc.data_dir)
    queries = ds.queries(dc.split)
    judged = ds.judged_relevant(dc.split)
    n_judged = 0
    corpus = ds.corpus
    path = Path(dc.groups)
    groups: list[TrainGroup] = []
    unknown_queries: list[str] = []
    unknown_docs: list[str] = []
    n_unknown_docs = 0
    # one string per document id, however many pools name it: each JSON line parses to its own copies, and
    # MS MARCO's 50M pool entries name a few million documents (about 2 GB of strings less)
    one: dict[str, str] = {}
    for (line, g), bad in with_unknown_ids(iter_groups(path, unique=True),
                                           lambda lg: (*lg[1].positive_ids, *lg[1].negative_ids), corpus):
        if g.query_id not in queries:
            unknown_queries.append(f"line {line}: {g.query_id!r}")
            continue
        if not g.positive_ids:
            raise UserInputError(f"group of query {g.query_id!r} has no positive", path=path, line=line,
                                 fix="every training group needs a labelled positive (positive_ids)")
        for d in bad:
            n_unknown_docs += 1
            if len(unknown_docs) < 3:
                unknown_docs.append(f"line {line}: {d!r}")
        positives = tuple(one.setdefault(d, d) for d in dict.fromkeys(g.positive_ids))
        pos_set = set(positives)
        negatives = [d for d in dict.fromkeys(g.negative_ids) if d not in pos_set]
        relevant = judged.get(g.query_id)  # never a negative either (a groups file not mined here may have them)
        if relevant:
            n = len(negatives)
            negatives = [d for d in negatives if d not in relevant]
            n_judged += n - len(negatives)
        pool = tuple(one.setdefault(d, d) for d in negatives)
        groups.append(TrainGroup(g.query_id, positives, pool, line))
    del one
    if unknown_queries:
        raise UserInputError(f"{len(unknown_queries)} group(s) name queries that split {dc.split!r} of "
                             f"{ds.name} does not have ({_examples(unknown_queries)})", path=path,
                             fix="pass the --split the groups were mined from")
    if n_unknown_docs:
        raise UserInputError(f"{n_unknown_docs} document id(s) are not in the corpus of {ds.name} "
                             f"({_examples(unknown_docs)})", path=path,
                             fix="use the groups mined from this --dataset")
    if not groups:
        raise UserInputError("the groups file holds no groups", path=path, fix="mine groups with `rankdistill mine`")
    data = TrainingData(groups, {g.query_id: queries[g.query_id] for g in groups}, corpus)
    if n_judged:
        logger.warning("%d negatives in %s are judged relevant to their query in the qrels of split %r and were "
                       "left out of the negative pools", n_judged, path, dc.split)
        data.dropped["judged_relevant_negatives"] = n_judged
    if config.needs_teacher:
        _attach_teacher(config, data)
    _check_sizes(config, data, path)
    return data


def input_digests(config: TrainConfig) -> dict[str, str | None]:
    """What the run's inputs hold, beside the settings that name them (``TrainConfig.fingerprint`` has the
    paths only): the groups file's bytes, the dataset's files, the starting model's files (``None`` for a hub
    name) and the teacher whose scores are used (its stored identity and number of scores).

    A finished run or a checkpoint made from other contents is then not taken for this run when a file was
    rewritten in place (groups mined again into the same path, a teacher rescored into the same store)."""
    from rankdistill.data.dataset import dataset_fingerprint, resolve_spec
    from rankdistill.io import content_digest, value_digest
    from rankdistill.models import weights_digest

    dc = config.data
    out: dict[str, str | None] = {
        "groups": content_digest(Path(dc.groups)) if Path(dc.groups).is_file() else None,
        "dataset": value_digest(dataset_fingerprint(resolve_spec(dc.dataset, dc.data_dir))),
        "model": weights_digest(config.model.model),
        "scores": None,
    }
    if dc.scores and Path(dc.scores).is_file():
        from rankdistill.teachers import ScoreStore

        with ScoreStore(dc.scores, readonly=True) as store:
            tid = store.resolve_teacher(dc.teacher_id)
            info = {k: v for k, v in store.teacher_info(tid).items() if k != "rankdistill"}
            out["scores"] = value_digest({"teacher": tid, "info": info, "count": store.count(tid)})
    return out


def _attach_teacher(config: TrainConfig, data: TrainingData) -> None:
    """Read the teacher's score of every group document, :data:`SCORE_BLOCK` groups at a time; with
    ``missing_scores = "skip"`` unscored documents leave their groups (and groups without a scored positive
    are dropped)."""
    from rankdistill.teachers import ScoreStore

    dc = config.data
    teacher = PoolScores()
    kept: list[TrainGroup] = []
    total = n_missing = no_positive = 0
    shown: list[str] = []
    with ScoreStore(dc.scores, readonly=True) as store:  # type: ignore[arg-type]
        tid = store.resolve_teacher(dc.teacher_id)
        info = store.teacher_info(tid)
        for start in range(0, len(data.groups), SCORE_BLOCK):
            block = data.groups[start:start + SCORE_BLOCK]
            have = store.get_many(tid, ((g.query_id, d) for g in block for d in (*g.positive_ids, *g.negative_ids)))
            for g in block:
                q = g.query_id
                docs = (*g.positive_ids, *g.negative_ids)
                total += len(docs)
                missing = [d for d in docs if (q, d) not in have]
                if missing:
                    n_missing += len(missing)
                    shown.extend(f"({q}, {d})" for d in missing[:3 - len(shown)])
                    g = TrainGroup(q, tuple(d for d in g.positive_ids if (q, d) in have),
                                   tuple(d for d in g.negative_ids if (q, d) in have), g.line)
                    if not g.positive_ids:
                        no_positive += 1
                        continue
                    docs = (*g.positive_ids, *g.negative_ids)
                teacher.add(q, docs, [have[(q, d)] for d in docs])
                kept.append(g)
    if n_missing and dc.missing_scores == "error":
        raise UserInputError(f"{n_missing} of {total} (query, document) pairs have no score from teacher "
                             f"{tid!r} (e.g. {', '.join(shown)})", path=dc.scores,
                             fix="score them with `rankdistill score` on these groups, or pass "
                                 "--missing-scores skip to leave them out")
    if n_missing:
        logger.warning("--missing-scores skip: left out %d unscored (query, document) pairs; %d group(s) lost "
                       "every scored positive and were dropped", n_missing, no_positive)
        data.dropped["missing_score_pairs"] = n_missing
        data.dropped["groups_without_scored_positive"] = no_positive
        data.groups = kept
    data.teacher, data.teacher_id, data.teacher_info = teacher, tid, info


def _check_sizes(config: TrainConfig, data: TrainingData, path: Path) -> None:
    need = config.data.group_size - 1
    small = [g for g in data.groups if len(g.negative_ids) < need]
    if small and config.data.missing_scores == "skip" and data.dropped.get("missing_score_pairs"):
        logger.warning("dropped %d group(s) left with fewer than %d scored negatives", len(small), need)
        data.dropped["groups_too_small"] = len(small)
        data.groups = [g for g in data.groups if len(g.negative_ids) >= need]
    elif small:
        shown = [f"line {g.line} query {g.query_id!r}: {len(g.negative_ids)}" for g in small]
        smallest = min(len(g.negative_ids) for g in small)
        raise UserInputError(f"{len(small)} of {len(data.groups)} group(s) have fewer than {need} distinct "
                             f"negatives for --group-size {config.data.group_size} ({_examples(shown)})",
                             path=path, fix=f"lower --group-size to {smallest + 1} or mine larger pools")
    if not data.groups:
        raise UserInputError("no usable group is left", path=path, fix="score the groups or lower --group-size")


# --- batches -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainBatch:
    """One device's micro-batch: ``B`` groups of ``G`` documents, positive first, as model inputs."""

    query_ids: tuple[str, ...]
    group_size: int
    teacher: Tensor | None = None
    """Teacher scores ``[B, G]`` (float32), when the loss uses them."""
    queries: TokenBatch | None = None
    """Bi-encoder: query inputs ``[B, Lq]``."""
    docs: TokenBatch | None = None
    """Bi-encoder: document inputs ``[B * G, Ld]``, group-major."""
    pairs: TokenBatch | None = None
    """Cross-encoder: pair inputs ``[B * G, L]``, group-major."""
    doc_keys: Tensor | None = None
    """Bi-encoder: int64 keys of the documents ``[B * G]`` (:func:`doc_key`), to find them across groups."""
    own_keys: Tensor | None = None
    """Bi-encoder: keys ``[B, R]`` of each query's positives and own documents (padded with -1): a document of
    another group with one of these keys is no in-batch negative of the query."""

    def _map(self, f) -> TrainBatch:
        return TrainBatch(self.query_ids, self.group_size, *(None if x is None else f(x) for x in (
            self.teacher, self.queries, self.docs, self.pairs, self.doc_keys, self.own_keys)))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TrainBatch:
        return self._map(lambda x: x.pin_memory())


def doc_key(doc_id: str) -> int:
    """A non-negative 62-bit key of a document id (:func:`~rankdistill.training.sampling.hashed_seed`), the
    same in every process."""
    return hashed_seed(doc_id) >> 2


class BatchBuilder:
    """Builds :class:`TrainBatch` objects from sampled groups and the token caches."""

    def __init__(self, *, arch: str, template: InputTemplate, query_cache: TokenCache, doc_cache: TokenCache,
                 pad_id: int, teacher: PoolScores | None, max_query_length: int,
                 max_doc_length: int, max_length: int, pad_multiple: int = 8, in_batch: bool = False) -> None:
        self.arch = arch
        self.in_batch = in_batch  # bi-encoder batches carry the document keys in-batch negatives need, then only
        self.template = template
        self.query_cache = query_cache
        self.doc_cache = doc_cache
        self.pad_id = pad_id
        self.teacher = teacher
        self.max_query_length = max_query_length
        self.max_doc_length = max_doc_length
        self.max_length = max_length
        self.pad_multiple = pad_multiple

    def length(self, group: SampledGroup) -> int:
        """Longest document of a group in tokens (the key for length bucketing)."""
        return max(self.doc_cache.length(d) for d in group.doc_ids)

    def __call__(self, groups: Sequence[SampledGroup]) -> TrainBatch:
        qids = tuple(g.query_id for g in groups)
        size = len(groups[0].doc_ids)
        teacher = None
        if self.teacher is not None:
            teacher = torch.tensor([self.teacher.lookup(g.query_id, g.doc_ids) for g in groups],
                                   dtype=torch.float32)
        if self.arch == "bi":
            q = encode_singles(self.template, self.query_cache, qids, self.max_query_length, self.pad_id,
                               self.pad_multiple)
            d = encode_singles(self.template, self.doc_cache, [d for g in groups for d in g.doc_ids],
                               self.max_doc_length, self.pad_id, self.pad_multiple)
            if not self.in_batch:
                return TrainBatch(qids, size, teacher, queries=q, docs=d)
            own = [sorted({doc_key(x) for x in (*g.positive_ids, *g.doc_ids)}) for g in groups]
            width = max(len(k) for k in own)
            return TrainBatch(qids, size, teacher, queries=q, docs=d,
                              doc_keys=torch.tensor([doc_key(x) for g in groups for x in g.doc_ids],
                                                    dtype=torch.int64),
                              own_keys=torch.tensor([k + [-1] * (width - len(k)) for k in own], dtype=torch.int64))
        pairs = [(g.query_id, d) for g in groups for d in g.doc_ids]
        p = encode_pairs(self.template, self.query_cache, self.doc_cache, pairs, self.max_length, self.pad_id,
                         self.pad_multiple)
        return TrainBatch(qids, size, teacher, pairs=p)


class StepBatches(torch.utils.data.Dataset):
    """Item ``i``: the ``grad_accum`` micro-batches of this device for optimizer step ``start + i``."""

    def __init__(self, plan: TrainingPlan, builder: BatchBuilder, *, start: int, stop: int, rank: int,
                 world_size: int, batch_size: int, grad_accum: int) -> None:
        self.plan = plan
        self.builder = builder
        self.start, self.stop = start, stop
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.grad_accum = batch_size, grad_accum

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> list[TrainBatch]:
        groups = self.plan.step(self.start + i)
        return [self.builder(shard(groups, micro=m, rank=self.rank, world_size=self.world_size,
                                   batch_size=self.batch_size)) for m in range(self.grad_accum)]
