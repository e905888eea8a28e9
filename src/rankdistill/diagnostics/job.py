"""The per-query diagnose job: teacher entropy, spread, positive rank, kappa and locality for every group.

For each group of a groups file, the documents are the positive(s) followed by the negative pool (the first
``group_size - 1`` negatives when a group size is given), scored by one teacher of a score store. The
statistics (one row per query id, columns named with their variant) are written to a parquet file, and a
sidecar ``<output>.meta.json`` records the encoder, metric, alpha, temperature, dataset-level summary
quantiles and how many groups were skipped, and why.

The maths lives in :mod:`~rankdistill.diagnostics.entropy`, :mod:`~rankdistill.diagnostics.kappa` and
:mod:`~rankdistill.diagnostics.locality`; this module only assembles inputs and outputs.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rankdistill.data.groups import Group, iter_groups
from rankdistill.diagnostics.entropy import (
    UndefinedStatistic,
    normalized_softmax_entropy,
    pairwise_entropy,
    positive_rank,
    score_spread,
    softmax_entropy,
)
from rankdistill.diagnostics.kappa import kappa, log_kappa
from rankdistill.diagnostics.locality import (
    METRICS,
    dataset_summary,
    mean_distance,
    robust_diameter,
)
from rankdistill.diagnostics.selections import sidecar_path
from rankdistill.errors import UserInputError, check_field_types
from rankdistill.io import atomic_path, atomic_write
from rankdistill.models import DEFAULT_ENCODER

if TYPE_CHECKING:
    from rankdistill.teachers.store import ScoreStore

logger = logging.getLogger(__name__)

Embedder = Callable[[Sequence[str]], np.ndarray]
"""Maps texts to a ``[n, dim]`` embedding matrix."""


@dataclass(frozen=True)
class DiagnoseConfig:
    """Settings of the diagnose job (validated on construction)."""

    temperature: float = 1.0
    alpha: float = 0.95
    metric: str = "cosine"
    encoder: str | None = DEFAULT_ENCODER
    locality: bool = True
    group_size: int | None = None
    teacher: str | None = None
    batch_size: int = 64
    max_length: int | None = None
    normalize: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UserInputError(f"temperature must be > 0, got {self.temperature}", fix="e.g. --temperature 1")
        if not 0.0 < self.alpha <= 1.0:
            raise UserInputError(f"alpha must be in (0, 1], got {self.alpha}", fix="e.g. --alpha 0.95")
        if self.metric not in METRICS:
            raise UserInputError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.group_size is not None and self.group_size < 2:
            raise UserInputError(f"group size must be >= 2 (a positive and a negative), got {self.group_size}")

    @property
    def t_tag(self) -> str:
        """``T1``, ``T0.5``, ...: the temperature as it appears in column names."""
        return f"T{self.temperature:g}"

    @property
    def alpha_tag(self) -> str:
        """``q95`` for alpha 0.95: the quantile as it appears in the diameter column."""
        return f"q{self.alpha * 100:g}"


def column_names(config: DiagnoseConfig) -> dict[str, str]:
    """Every output column (beyond ``query_id``) with a one-line description of its variant."""
    t, tau = config.t_tag, f"tau={config.temperature:g}"
    cols = {
        "n_docs": "documents in the diagnosed group (positives + negatives)",
        "n_positives": "labelled positives in the group",
        "n_negatives": "negatives in the group",
    }
    for part, what in (("with_pos", "positives and negatives"), ("no_pos", "negatives only")):
        cols[f"softmax_entropy_nats_{t}_{part}"] = f"-sum p ln p, p = softmax(t/tau), {tau}, over {what}; nats"
        cols[f"softmax_entropy_norm_{t}_{part}"] = f"softmax entropy / ln k, {tau}, over {what}; in [0, 1]"
        cols[f"pairwise_entropy_bits_{t}_{part}"] = \
            f"mean over i<j of h2(sigmoid((t_i-t_j)/tau)), {tau}, over {what}; bits"
    cols.update({
        "score_std": "population std of the teacher scores of the whole group",
        "score_range": "max - min teacher score of the whole group",
        "positive_score": "teacher score of the first positive",
        "max_negative_score": "highest teacher score among the negatives",
        "positive_rank": "1-based teacher rank of the first positive among itself and the negatives "
                         "(ties rank it lower)",
        "n_negatives_above_positive": "negatives the teacher scores strictly above the first positive",
        f"kappa_{t}": f"1 / (k min_i p_i), p = softmax(t/tau), {tau}, whole group",
        f"log_kappa_{t}": f"natural log of kappa_{t}",
    })
    if config.locality:
        m, a = config.metric, config.alpha_tag
        cols[f"diameter_{a}_{m}"] = f"{config.alpha:g}-quantile of pairwise {m} distances of the group's documents"
        cols[f"mean_dist_neg_query_{m}"] = f"mean {m} distance of the negatives to the query"
        cols[f"mean_dist_neg_pos_{m}"] = f"mean {m} distance of the negatives to the positives"
        cols[f"mean_dist_pos_query_{m}"] = f"mean {m} distance of the positives to the query"
    return cols


def _entropies(scores: np.ndarray, temperature: float, t: str, part: str) -> dict[str, float]:
    if scores.size < 2:
        nan = math.nan
        return {f"softmax_entropy_nats_{t}_{part}": nan, f"softmax_entropy_norm_{t}_{part}": nan,
                f"pairwise_entropy_bits_{t}_{part}": nan}
    return {
        f"softmax_entropy_nats_{t}_{part}": softmax_entropy(scores, temperature),
        f"softmax_entropy_norm_{t}_{part}": normalized_softmax_entropy(scores, temperature),
        f"pairwise_entropy_bits_{t}_{part}": pairwise_entropy(scores, temperature),
    }


def score_statistics(scores: Sequence[float], n_positives: int, config: DiagnoseConfig) -> dict[str, float]:
    """The teacher statistics of one group whose first ``n_positives`` scores are the positives'.

    Raises :class:`UndefinedStatistic` for fewer than two documents or a non-finite score. Statistics
    over the negatives only are NaN when there are fewer than two negatives; positive statistics are NaN
    (rank: missing) when the group has no positive.
    """
    t = np.asarray(scores, dtype=np.float64)
    if t.size < 2:
        raise UndefinedStatistic("one document")
    if not np.all(np.isfinite(t)):
        raise UndefinedStatistic("non-finite teacher score")
    negs = t[n_positives:]
    tag = config.t_tag
    out: dict[str, float] = {"n_docs": t.size, "n_positives": n_positives, "n_negatives": negs.size}
    out.update(_entropies(t, config.temperature, tag, "with_pos"))
    out.update(_entropies(negs, config.temperature, tag, "no_pos"))
    spread = score_spread(t)
    out["score_std"], out["score_range"] = spread.std, spread.range
    if n_positives > 0:
        out["positive_score"] = float(t[0])
        out["positive_rank"] = positive_rank(np.concatenate([t[:1], negs]), 0)
        out["n_negatives_above_positive"] = int(np.sum(negs > t[0]))
    else:
        out["positive_score"] = math.nan
        out["positive_rank"] = pd.NA  # type: ignore[assignment]
        out["n_negatives_above_positive"] = pd.NA  # type: ignore[assignment]
    out["max_negative_score"] = float(np.max(negs)) if negs.size else math.nan
    out[f"kappa_{tag}"] = kappa(t, config.temperature)
    out[f"log_kappa_{tag}"] = log_kappa(t, config.temperature)
    return out


def locality_statistics(query_emb: np.ndarray, doc_embs: np.ndarray, n_positives: int,
                        config: DiagnoseConfig) -> dict[str, float]:
    """Robust diameter of the group's documents and mean distances negatives->query, ->positives."""
    m = config.metric
    pos, negs = doc_embs[:n_positives], doc_embs[n_positives:]
    out = {f"diameter_{config.alpha_tag}_{m}": robust_diameter(doc_embs, config.alpha, m)}  # type: ignore[arg-type]
    nan = math.nan
    out[f"mean_dist_neg_query_{m}"] = mean_distance(negs, query_emb, m) if len(negs) else nan  # type: ignore[arg-type]
    out[f"mean_dist_neg_pos_{m}"] = mean_distance(negs, pos, m) if len(negs) and len(pos) else nan  # type: ignore[arg-type]
    out[f"mean_dist_pos_query_{m}"] = mean_distance(pos, query_emb, m) if len(pos) else nan  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class DiagnoseResult:
    """The per-query table, the skip counts by reason (with example query ids) and the sidecar content."""

    frame: pd.DataFrame
    skipped: dict[str, int]
    skipped_examples: dict[str, list[str]]
    meta: dict = field(default_factory=dict)


def group_documents(group: Group, group_size: int | None) -> tuple[list[str], int]:
    """The documents diagnosed for ``group`` (positives first, then negatives, without repeats).

    With ``group_size = G`` only the first ``G - 1`` negatives of the pool are taken.
    """
    positives = list(dict.fromkeys(group.positive_ids))
    pos_set = set(positives)
    negatives = [d for d in dict.fromkeys(group.negative_ids) if d not in pos_set]
    if group_size is not None:
        negatives = negatives[:group_size - 1]
    return positives + negatives, len(positives)


def _pair_scores(scores: Mapping) -> Mapping[tuple[str, str], float]:
    """``{(query_id, doc_id): score}`` from itself or from a run ``{query_id: {doc_id: score}}``."""
    first = next(iter(scores), None)
    if first is None or isinstance(first, tuple):
        return scores
    if isinstance(scores[first], Mapping):
        return {(q, d): s for q, docs in scores.items() for d, s in docs.items()}
    raise TypeError("teacher_scores must map (query_id, doc_id) to a score, or query_id to {doc_id: score}; "
                    f"got a key {first!r} with value {scores[first]!r}")


def diagnose_groups(groups: Sequence[Group], teacher_scores: Mapping[tuple[str, str], float],
                    config: DiagnoseConfig, *, dataset=None, query_texts: Mapping[str, str] | None = None,
                    doc_text: Callable[[str], str | None] | None = None,
                    embed: Embedder | None = None, progress: bool = True, chunk_size: int = 4096
                    ) -> DiagnoseResult:
    """Diagnose every group; groups where a statistic is undefined are skipped and counted by reason.

    Args:
        groups: the training groups (unique query ids).
        teacher_scores: ``{(query_id, doc_id): score}`` of one teacher, or ``{query_id: {doc_id: score}}``
            (a run, as :meth:`ScoreStore.scores` gives).
        dataset: where the locality statistics (``config.locality``) read the texts: a loaded
            :class:`~rankdistill.data.Dataset` or a dataset name; or give ``query_texts`` and ``doc_text``
            (which returns ``None`` for a document missing from the corpus).
        embed: texts to vectors for the locality statistics; default ``config.encoder``, cached.
        chunk_size: groups whose texts are embedded together (bounds memory on large groups files).
    """
    if config.locality:
        if query_texts is None or doc_text is None:
            if dataset is None:
                raise UserInputError("the locality statistics need the queries' and documents' texts",
                                     fix="pass dataset= (or query_texts= and doc_text=), or "
                                         "DiagnoseConfig(locality=False)")
            query_texts, doc_text = _dataset_texts(dataset)
        embed = embed or _default_embed(config, progress)
    teacher_scores = _pair_scores(teacher_scores)
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}

    def skip(qid: str, reason: str) -> None:
        skipped[reason] += 1
        examples.setdefault(reason, [])
        if len(examples[reason]) < 10:
            examples[reason].append(qid)

    rows: list[dict] = []
    pending: list[tuple[dict, str, list[str], int]] = []
    for g in tqdm(groups, desc="diagnose: teacher statistics", unit="group", disable=not progress or None):
        docs, n_pos = group_documents(g, config.group_size)
        if len(docs) < 2:
            skip(g.query_id, "one document (entropy undefined)")
            continue
        missing = [d for d in docs if (g.query_id, d) not in teacher_scores]
        if missing:
            skip(g.query_id, "missing teacher scores")
            continue
        try:
            row = {"query_id": g.query_id,
                   **score_statistics([teacher_scores[(g.query_id, d)] for d in docs], n_pos, config)}
        except UndefinedStatistic as e:
            skip(g.query_id, e.reason)
            continue
        if config.locality:
            assert query_texts is not None and doc_text is not None
            if g.query_id not in query_texts:
                skip(g.query_id, "query text not found in the dataset")
                continue
            texts = [doc_text(d) for d in docs]
            if any(t is None for t in texts):
                skip(g.query_id, "document not found in the corpus")
                continue
            pending.append((row, g.query_id, docs, n_pos))
        rows.append(row)

    if config.locality and pending:
        rows = _add_locality(rows, pending, config, query_texts, doc_text, embed, skip, progress,  # type: ignore[arg-type]
                             chunk_size)

    columns = ["query_id", *column_names(config)]
    frame = pd.DataFrame(rows, columns=columns)
    for c in ("n_docs", "n_positives", "n_negatives"):
        frame[c] = frame[c].astype("int64")
    for c in ("positive_rank", "n_negatives_above_positive"):
        frame[c] = frame[c].astype("Int64")
    return DiagnoseResult(frame, dict(skipped), examples)


def _add_locality(rows: list[dict], pending: list[tuple[dict, str, list[str], int]], config: DiagnoseConfig,
                  query_texts: Mapping[str, str], doc_text: Callable[[str], str | None], embed: Embedder,
                  skip: Callable[[str, str], None], progress: bool, chunk_size: int = 4096) -> list[dict]:
    """Embed the queries and documents chunk by chunk (bounded memory; the embedding cache makes documents
    shared between chunks cheap) and add the locality columns; groups where they are undefined are skipped."""
    dropped: set[int] = set()
    n_docs = len({d for _, _, docs, _ in pending for d in docs})
    logger.info("embedding %d queries and %d distinct documents", len(pending), n_docs)
    bar = tqdm(total=len(pending), desc="diagnose: locality", unit="group", disable=not progress or None)
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start:start + chunk_size]
        doc_ids = sorted({d for _, _, docs, _ in chunk for d in docs})
        q_emb = embed([query_texts[qid] for _, qid, _, _ in chunk])
        d_emb = embed([doc_text(d) or "" for d in doc_ids])
        d_index = {d: i for i, d in enumerate(doc_ids)}
        for i, (row, qid, docs, n_pos) in enumerate(chunk):
            try:
                row.update(locality_statistics(q_emb[i], d_emb[[d_index[d] for d in docs]], n_pos, config))
            except UndefinedStatistic as e:
                skip(qid, f"locality undefined ({e.reason})")
                dropped.add(id(row))
        bar.update(len(chunk))
    bar.close()
    return [r for r in rows if id(r) not in dropped]


DIAGNOSE_BLOCK = 16384
"""Groups :func:`run_diagnose` reads, scores and diagnoses at a time: all of MS MARCO's groups, their pairs and a
dict of their scores at once took about 20 GB."""


def _merge(results: Sequence[DiagnoseResult]) -> DiagnoseResult:
    """One result of the blocks' results, in their order (at most 10 examples per reason, as each keeps)."""
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for r in results:
        skipped.update(r.skipped)
        for reason, ids in r.skipped_examples.items():
            examples[reason] = (examples.get(reason, []) + ids)[:10]
    # blocks whose every group was skipped have empty frames of object columns: left out of the concatenation,
    # which would make every column object
    frames = [r.frame for r in results if not r.frame.empty] or [results[0].frame]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return DiagnoseResult(frame, dict(skipped), examples)


def _dataset_texts(dataset, split: str | None = None, data_dir: str | Path | None = None
                   ) -> tuple[dict[str, str], Callable[[str], str | None]]:
    """``(query_texts, doc_text)`` of ``dataset`` (a name or path, or a loaded
    :class:`~rankdistill.data.Dataset`): the queries of ``split`` or of every split, and a document's text
    (``None`` for one not in the corpus)."""
    from rankdistill.data import Dataset, load_dataset

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    query_texts: dict[str, str] = {}
    for s in [split] if split else ds.split_names():
        for q, text in ds.all_queries(s).items():
            query_texts.setdefault(q, text)
    corpus = ds.corpus

    def doc_text(doc_id: str) -> str | None:
        doc = corpus.get(doc_id)
        return None if doc is None else doc.full_text

    return query_texts, doc_text


def _default_embed(config: DiagnoseConfig, progress: bool) -> Embedder:
    """``config.encoder``'s embeddings, through the embedding cache (shared with dense mining)."""
    from rankdistill.models.embeddings import encode_texts

    def embed(texts: Sequence[str]) -> np.ndarray:
        return encode_texts(texts, model=config.encoder, batch_size=config.batch_size, max_length=config.max_length,
                            normalize=config.normalize, cache_dir=config.cache_dir, show_progress=progress)

    return embed


def run_diagnose(dataset: str | Path | None, groups_path: str | Path, store_path: str | Path,
                 output: str | Path, config: DiagnoseConfig, *, split: str | None = None,
                 data_dir: str | Path | None = None, embed: Embedder | None = None,
                 progress: bool = True) -> DiagnoseResult:
    """Diagnose a groups file with a score store's teacher and write ``output`` (parquet) + sidecar.

    ``dataset`` gives query and document texts for the locality statistics (``None`` only when
    ``config.locality`` is off). ``embed`` defaults to :func:`rankdistill.models.embeddings.encode_texts`
    with ``config.encoder``, sharing the dense-mining embedding cache. The groups are read, scored and
    diagnosed :data:`DIAGNOSE_BLOCK` at a time.
    """
    from rankdistill.teachers import ScoreStore

    with ScoreStore(store_path, readonly=True) as store:  # one connection: the teacher is resolved before the rest
        return _diagnose(store, dataset, groups_path, store_path, output, config, split=split, data_dir=data_dir,
                         embed=embed, progress=progress)


def _diagnose(store: ScoreStore, dataset: str | Path | None, groups_path: str | Path, store_path: str | Path,
              output: str | Path, config: DiagnoseConfig, *, split: str | None, data_dir: str | Path | None,
              embed: Embedder | None, progress: bool) -> DiagnoseResult:
    teacher = store.resolve_teacher(config.teacher)
    teacher_info = store.teacher_info(teacher)
    query_texts = doc_text = encoder_id = None
    if config.locality:
        if dataset is None:
            raise UserInputError("locality statistics need --dataset", fix="give --dataset or --no-locality")
        from rankdistill.models import model_id

        query_texts, doc_text = _dataset_texts(dataset, split, data_dir)
        embed = embed or _default_embed(config, progress)
        encoder_id = model_id(config.encoder)
    results: list[DiagnoseResult] = []
    n_groups = n_scored = 0
    groups = (g for _, g in iter_groups(groups_path, unique=True))
    bar = tqdm(desc="diagnose", unit="group", disable=not progress or None)
    while block := list(itertools.islice(groups, DIAGNOSE_BLOCK)):
        n_groups += len(block)
        pairs = [(g.query_id, d) for g in block for d in group_documents(g, config.group_size)[0]]
        scores = store.get_many(teacher, pairs)
        n_scored += len(scores)
        results.append(diagnose_groups(block, scores, config, query_texts=query_texts, doc_text=doc_text,
                                       embed=embed, progress=False))
        bar.update(len(block))
    bar.close()
    if not n_groups:
        raise UserInputError("the groups file has no groups", path=groups_path)
    if not n_scored:
        raise UserInputError(f"the score store has no score of teacher {teacher!r} for these groups",
                             path=store_path, fix=f"run `rankdistill score --groups {groups_path}` first")
    result = _merge(results)
    frame = result.frame
    if frame.empty:
        reasons = "; ".join(f"{r}: {n}" for r, n in sorted(result.skipped.items()))
        raise UserInputError(f"no group could be diagnosed ({reasons})", path=groups_path,
                             fix="check that the groups, the score store and the dataset belong together")
    n_constant = int((frame["score_range"] == 0).sum())
    if n_constant == len(frame) and len(frame) > 1:
        raise UserInputError(f"teacher {teacher!r} gives constant scores in every group", path=store_path,
                             fix="check the teacher model (a random or untrained head?) and re-score")
    if n_constant:
        logger.warning("%d group(s) have constant teacher scores (maximal entropy)", n_constant)
    for reason, n in sorted(result.skipped.items()):
        logger.warning("skipped %d group(s): %s (e.g. %s)", n, reason, ", ".join(result.skipped_examples[reason][:3]))

    numeric = [c for c in frame.columns if c != "query_id"]
    summary = dataset_summary({c: frame[c].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
                               for c in numeric})
    meta = {
        "groups": str(groups_path),
        "scores": str(store_path),
        "dataset": None if dataset is None else str(dataset),
        "teacher": teacher,
        "teacher_info": teacher_info,
        "config": asdict(config),
        "temperature": config.temperature,
        "alpha": config.alpha,
        "metric": config.metric if config.locality else None,
        "encoder": encoder_id,
        "group_size": config.group_size,
        "n_groups": n_groups,
        "n_diagnosed": len(frame),
        "n_skipped": sum(result.skipped.values()),
        "skipped": result.skipped,
        "skipped_examples": result.skipped_examples,
        "n_constant_score_groups": n_constant,
        "columns": column_names(config),
        "summary": summary,
    }
    if config.locality:
        diam = frame[f"diameter_{config.alpha_tag}_{config.metric}"].to_numpy(dtype=float)
        diam = diam[np.isfinite(diam)]
        meta["dataset_diameter"] = {
            "definition": f"{config.alpha:g}-quantile over queries of the per-group {config.alpha_tag} "
                          f"{config.metric} diameter",
            "value": float(np.quantile(diam, config.alpha)) if diam.size else None,
        }
    write_diagnostics(frame, meta, output)
    return DiagnoseResult(frame, result.skipped, result.skipped_examples, meta)


def write_diagnostics(frame: pd.DataFrame, meta: dict, output: str | Path) -> None:
    """Write the per-query parquet atomically, then its sidecar ``<output>.meta.json``."""
    with atomic_path(output) as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_write(sidecar_path(output)) as fh:
        json.dump(meta, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


__all__ = [
    "DiagnoseConfig",
    "DiagnoseResult",
    "column_names",
    "diagnose_groups",
    "group_documents",
    "locality_statistics",
    "run_diagnose",
    "score_statistics",
    "write_diagnostics",
]
