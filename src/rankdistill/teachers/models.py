"""Teachers: models that give each (query, document) pair a relevance score.

- :class:`CrossEncoderTeacher`: any ``AutoModelForSequenceClassification`` with one output (a relevance
  logit) or two (not relevant / relevant); the score space (:mod:`rankdistill.teachers.spaces`) is chosen
  explicitly and recorded. A model without a trained classification head is refused: it is not a ranking model.
- :class:`BiEncoderTeacher`: a sentence-transformers bi-encoder, score = dot product or cosine of the query
  and document embeddings (document embeddings come from the on-disk cache of
  :func:`rankdistill.models.embeddings.encode_texts`).

An ensemble of teachers is scored by :func:`rankdistill.teachers.engine.score_ensemble`.

Every teacher works in two steps, so that the engine can overlap them: :meth:`Teacher.prepare` (CPU:
texts -> token ids or embeddings) and :meth:`Teacher.run` (model: yields ``(positions, scores)`` batch by batch).
"""

from __future__ import annotations

import abc
import copy
import gc
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankdistill import __version__
from rankdistill.errors import UserInputError, check_field_types
from rankdistill.models import model_id, resolve_model, weights_digest
from rankdistill.models.backbone import model_load_errors, quiet_transformers
from rankdistill.teachers.batching import length_sorted_batches, pad_batch
from rankdistill.teachers.options import SCORE_SPACES, SIMILARITIES, TEACHER_KINDS
from rankdistill.teachers.runtime import dtype_name, resolve_device, resolve_dtype
from rankdistill.teachers.spaces import resolve_score_space, scores_from_logits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherConfig:
    """How to load and run one teacher.

    Attributes:
        model: a local model directory or a Hugging Face name.
        teacher_id: the id its scores are stored under (default: ``model`` as given).
        kind: ``cross`` (cross-encoder), ``bi`` (bi-encoder) or ``auto`` (from the model's files).
        score_space: cross-encoders: ``auto``, ``logit``, ``log_p_rel`` or ``log_odds``.
        similarity: bi-encoders: ``dot`` or ``cosine``.
        max_length: token limit of a (query, document) input (default: min(512, the model's limit)), cut
            ``longest_first`` as sentence-transformers' ``CrossEncoder`` does. A cross-encoder student of
            ``rankdistill train`` used as a teacher is read this way too, not with its own query limit
            (``max_query_length``, which ``rerank`` applies): a query longer than that limit scores slightly
            differently here (about 1e-3).
        batch_size: pairs per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        dtype: ``auto`` (bf16/fp16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        allow_untrained_head: accept a cross-encoder whose classification head is randomly initialised
            (benchmarks only: its scores are meaningless).
        embedding_cache: bi-encoders: the embedding cache root (``None`` = default, ``False`` = none).
    """

    model: str
    teacher_id: str | None = None
    kind: str = "auto"
    score_space: str = "auto"
    similarity: str = "dot"
    max_length: int | None = None
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"
    allow_untrained_head: bool = False
    embedding_cache: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.kind not in TEACHER_KINDS:
            raise UserInputError(f"unknown teacher type {self.kind!r}", fix=f"use one of {', '.join(TEACHER_KINDS)}")
        if self.score_space != "auto" and self.score_space not in SCORE_SPACES:
            raise UserInputError(f"unknown score space {self.score_space!r}",
                                 fix=f"use auto or one of {', '.join(SCORE_SPACES)}")
        if self.similarity not in SIMILARITIES:
            raise UserInputError(f"unknown similarity {self.similarity!r}", fix="use dot or cosine")
        if self.batch_size < 1:
            raise UserInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise UserInputError(f"--max-length must be at least 8, got {self.max_length}")

    @property
    def id(self) -> str:
        return self.teacher_id or self.model


class Teacher(abc.ABC):
    """A loaded teacher. ``identity()`` names what its scores depend on; ``info()`` adds how they were made."""

    kind: str = ""
    needs_query_ids: bool = False
    """Whether :meth:`prepare` takes each pair's query id as a third argument (a teacher whose model depends on
    the query, such as a cross-fitted one, :mod:`rankdistill.teachers.crossfit`); the engine then passes them."""

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.teacher_id = config.id

    @abc.abstractmethod
    def identity(self) -> dict:
        """Settings that change the scores; a store refuses to mix scores made with other ones."""

    def info(self) -> dict:
        return {**self.identity(), "teacher_id": self.teacher_id, "rankdistill": __version__}

    @abc.abstractmethod
    def prepare(self, queries: Sequence[str], docs: Sequence[str]) -> Any:
        """CPU-side work for a chunk of pairs ``(queries[i], docs[i])`` (tokenising, embedding)."""

    @abc.abstractmethod
    def run(self, prepared: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions in the chunk, float scores)`` one batch at a time."""

    def prepare_pairs(self, queries: Sequence[str], docs: Sequence[str],
                      query_ids: Sequence[str] | None = None) -> Any:
        """:meth:`prepare`, given the query ids where it takes them (:attr:`needs_query_ids`)."""
        return self.prepare(queries, docs, query_ids) if self.needs_query_ids else self.prepare(queries, docs)

    def score(self, queries: Sequence[str], docs: Sequence[str],
              query_ids: Sequence[str] | None = None) -> np.ndarray:
        """Scores of the pairs ``(queries[i], docs[i])`` in input order (convenience; no store). ``query_ids``:
        for a teacher that :attr:`needs_query_ids`."""
        if isinstance(queries, str) or isinstance(docs, str):  # would be scored character by character
            raise TypeError("queries and docs must be sequences of texts, one per pair, not one string: pass [text]")
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents: give one query per document "
                             "(repeat the query for each of its documents)")
        out = np.full(len(queries), np.nan, dtype=np.float64)
        if len(queries):
            for idx, s in self.run(self.prepare_pairs(queries, docs, query_ids)):
                out[idx] = s
        return out

    def warm(self, query_ids: Iterable[str] = ()) -> None:  # noqa: B027 -- only a teacher that loads late has one
        """Load what :meth:`run` needs for pairs of ``query_ids`` now (the engine calls it before the first pair
        it scores, with that block's queries, so that the loading is not counted in the pairs per second)."""

    def close(self) -> None:  # noqa: B027 -- optional: only a teacher that holds a model overrides it
        """Free the model (and GPU memory)."""


def read_model_config(path: str) -> Any:
    from transformers import AutoConfig

    with model_load_errors(path, fix="give a local model directory or a Hugging Face name"):
        return AutoConfig.from_pretrained(path)


def _classifier_name(cfg: Any) -> str:
    """The class ``AutoModelForSequenceClassification`` loads for the model config ``cfg``, named without
    loading the weights."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(cfg)].__name__
    except (KeyError, ValueError):  # a class the mapping does not list: the checkpoint's own name for it
        archs = list(getattr(cfg, "architectures", None) or [])
        return next((a for a in archs if a.endswith("ForSequenceClassification")), archs[0] if archs else "")


def _refuse_untrained(model: str, missing: Sequence[str]) -> None:
    raise UserInputError(f"{model!r} is not a trained ranking model: weights {', '.join(sorted(missing)[:3])} are "
                         "missing from the checkpoint (they would be random)", fix="give a trained cross-encoder")


def _checkpoint_files(path: str) -> Path | None:
    """The folder holding ``path``'s safetensors checkpoint: ``path`` itself, or for a hub name its snapshot in
    the local Hugging Face cache (never fetched); None where there is none."""
    folder = Path(path)
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors.index.json", "model.safetensors"):
            found = try_to_load_from_cache(path, name)
            if isinstance(found, str):
                return Path(found).parent
    except Exception as e:  # not a repository id, or no cache: the weights are loaded to tell
        logger.debug("no cached checkpoint for %s (%s)", path, e)
    return None


def _head_missing(path: str, cfg: Any, num_labels: int) -> list[str] | None:
    """The classification head's weights that ``path``'s safetensors checkpoint lacks, told from the files'
    headers (no weight is read): the parameters of the empty (meta-device) model outside its base model that
    no stored tensor matches, by name (with or without the base model's prefix, as transformers loads them).

    None where the headers cannot tell, and the weights must be loaded to find out: another format; a model
    that cannot be built empty or has no named base model; a stored tensor of another shape; or a weight of
    the base model missing (transformers decides whether it is tied to another or is a real gap)."""
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    folder = _checkpoint_files(path)
    if folder is None:
        return None
    try:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (folder / "model.safetensors").is_file():
            shards = ["model.safetensors"]
        else:
            return None
        stored: dict[str, tuple[int, ...]] = {}
        for shard in shards:
            with safe_open(str(folder / shard), framework="pt") as f:
                stored.update((k, tuple(f.get_slice(k).get_shape())) for k in f.keys())
        cfg = copy.deepcopy(cfg)
        cfg.num_labels = num_labels
        with torch.device("meta"):
            empty = AutoModelForSequenceClassification.from_config(cfg)
    except Exception as e:  # any failure only means that the weights are loaded to tell
        logger.debug("cannot read the weights' names of %s without loading them (%s)", path, e)
        return None
    prefix = empty.base_model_prefix
    if not prefix or not hasattr(empty, prefix):
        return None
    missing = []
    for name, tensor in empty.state_dict().items():
        if "position_ids" in name:
            continue
        bare = name[len(prefix) + 1:] if name.startswith(f"{prefix}.") else None
        found = next((k for k in (name, bare, f"{prefix}.{name}") if k is not None and k in stored), None)
        if found is None:
            if bare is not None:  # a base weight: tied to another, or a real gap; loading tells which
                return None
            missing.append(name)
        elif stored[found] != tuple(tensor.shape):
            return None
    return missing


def _is_sentence_transformer(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "modules.json").is_file() or (p / "config_sentence_transformers.json").is_file())


def detect_kind(model: str) -> str:
    """``cross`` when the config names a ``*ForSequenceClassification`` architecture, ``bi`` for a
    sentence-transformers directory without one; otherwise the model is not a ranking model."""
    path = resolve_model(model)
    cfg = read_model_config(path)
    archs = list(getattr(cfg, "architectures", None) or [])
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "cross"
    if _is_sentence_transformer(path):
        return "bi"
    raise UserInputError(
        f"{model!r} is not a ranking model: its architectures are {archs or 'not given'}, not a "
        "*ForSequenceClassification head, and it is not a sentence-transformers model",
        fix="give a cross-encoder, or --teacher-type bi to use an embedding model as a bi-encoder teacher")


def _model_limit(cfg: Any, tokenizer: Any) -> int:
    limits = [512]
    mpe = getattr(cfg, "max_position_embeddings", None)
    if isinstance(mpe, int) and mpe > 0:
        # RoBERTa-style position ids start after the padding index
        offset = 2 if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(mpe - offset)
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    return min(limits)


@dataclass(frozen=True)
class TokenizedChunk:
    """Pre-tokenised pairs of one chunk: token ids (and type ids) per pair, and their lengths."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    lengths: np.ndarray


class CrossEncoderTeacher(Teacher):
    """A cross-encoder teacher (``AutoModelForSequenceClassification``) run with length-sorted batches."""

    kind = "cross"

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__(config)
        from transformers import AutoTokenizer

        self.path = resolve_model(config.model)
        cfg = read_model_config(self.path)
        archs = list(getattr(cfg, "architectures", None) or [])
        has_head = any(a.endswith("ForSequenceClassification") for a in archs)
        if not has_head and not config.allow_untrained_head:
            raise UserInputError(
                f"{config.model!r} is not a ranking model: architectures {archs or 'not given'} have no "
                "sequence-classification head", fix="give a cross-encoder, or --teacher-type bi for an embedding model")
        self.num_labels = int(getattr(cfg, "num_labels", 1)) if has_head else 1
        if self.num_labels not in (1, 2):
            raise UserInputError(
                f"{config.model!r} is not a ranking model: its head has {self.num_labels} outputs",
                fix="a ranking cross-encoder has 1 output (relevance logit) or 2 (not relevant, relevant)")
        self.score_space = resolve_score_space(config.score_space, self.num_labels)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.architecture = _classifier_name(cfg)
        self._model: torch.nn.Module | None = None
        self._model_lock = threading.Lock()
        missing = _head_missing(self.path, cfg, self.num_labels)
        if missing is None:  # the headers cannot tell: load the weights now, and let that check them
            _ = self.model
        elif missing and not config.allow_untrained_head:
            _refuse_untrained(config.model, missing)
        limit = _model_limit(cfg, self.tokenizer)
        if config.max_length is not None and config.max_length > limit:
            raise UserInputError(f"--max-length {config.max_length} exceeds the model's limit of {limit} tokens",
                                 fix=f"use --max-length {limit} or less")
        self.max_length = config.max_length or limit
        self.token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.multiple_of = 8 if self.device.type == "cuda" else 1
        from rankdistill.training.tokens import InputTemplate

        self.template = InputTemplate.from_tokenizer(self.tokenizer)

    def identity(self) -> dict:
        return {"kind": "cross", "model": model_id(self.config.model), "weights": weights_digest(self.path),
                "dtype": dtype_name(self.dtype), "score_space": self.score_space, "max_length": self.max_length,
                "num_labels": self.num_labels, "truncation": "longest_first"}

    def info(self) -> dict:
        return {**super().info(), "architecture": self.architecture, "dtype": dtype_name(self.dtype),
                "device": self.device.type, "untrained_head": bool(self.config.allow_untrained_head)}

    def prepare(self, queries: Sequence[str], docs: Sequence[str]) -> TokenizedChunk:
        """Token ids of each pair, exactly as ``tokenizer(q, d, truncation="longest_first")`` gives them, built
        from each distinct text tokenised once: a document met by many queries, as in re-ranking, is taken from
        the process's token memo (:class:`~rankdistill.training.tokens.TokenCache`) in later chunks."""
        from rankdistill.training.tokens import TokenCache

        # texts are kept to twice the limit, so that longest_first sees which one is longer (it could differ
        # from the tokenizer only where both texts pass twice the limit)
        cache = TokenCache(self.tokenizer, 2 * self.max_length, "teacher texts")
        cache.add(((t, t) for t in (*queries, *docs)), progress=False)
        ids, types = [], []
        for q, d in zip(queries, docs):
            pair_ids, pair_types = self.template.pair(cache[q], cache[d], self.max_length, "longest_first")
            ids.append(np.asarray(pair_ids, dtype=np.int64))
            types.append(np.asarray(pair_types, dtype=np.int64))
        return TokenizedChunk(ids, types if self.token_types else None,
                              np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))

    @torch.inference_mode()
    def run(self, prepared: TokenizedChunk) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Forward the chunk's length-sorted batches. On a GPU the loop runs one batch ahead: batch i+1 is
        queued before batch i's scores are read back (into pinned memory), so padding the next batch and
        committing the previous one overlap with the GPU's work."""
        cuda = self.device.type == "cuda"
        pending: tuple[np.ndarray, torch.Tensor, Any] | None = None
        for index in length_sorted_batches(prepared.lengths, self.config.batch_size):
            batch = pad_batch(index, prepared.input_ids, prepared.token_type_ids, self.pad_id, self.multiple_of,
                              self.max_length)
            inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            if batch.token_type_ids is not None:
                inputs["token_type_ids"] = batch.token_type_ids
            tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
            if cuda:
                tensors = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in tensors.items()}
            elif self.device.type != "cpu":
                tensors = {k: v.to(self.device) for k, v in tensors.items()}
            scores = scores_from_logits(self.model(**tensors).logits, self.score_space)
            if not cuda:
                yield batch.index, scores.cpu().numpy().astype(np.float64)
                continue
            host = torch.empty(scores.shape, dtype=scores.dtype, pin_memory=True)
            host.copy_(scores, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            if pending is not None:
                yield self._collect(pending)
            pending = (batch.index, host, done)
        if pending is not None:
            yield self._collect(pending)

    @staticmethod
    def _collect(pending: tuple[np.ndarray, torch.Tensor, Any]) -> tuple[np.ndarray, np.ndarray]:
        index, host, done = pending
        done.synchronize()
        return index, host.numpy().astype(np.float64)

    @property
    def model(self) -> torch.nn.Module:
        """The weights, loaded on first use (once, whichever thread asks first): a run whose pairs are all stored
        already, or whose chunks an executor's workers score, never loads them in this process."""
        with self._model_lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        # ordinary tensors even when first asked for under run()'s inference mode
        with torch.inference_mode(False), quiet_transformers():  # the load report is read below; no bar
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                self.path, num_labels=self.num_labels, output_loading_info=True, dtype=self.dtype)
        head_missing = sorted(k for k in loading.get("missing_keys", ()) if "embeddings.position_ids" not in k)
        if head_missing and not self.config.allow_untrained_head:
            _refuse_untrained(self.config.model, head_missing)
        return model.to(self.device).eval()

    def warm(self, query_ids: Iterable[str] = ()) -> None:
        _ = self.model

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._model is not None

    def close(self) -> None:
        with self._model_lock:
            model, self._model = self._model, None
        if model is None:  # never loaded: nothing to free
            return
        del model
        if self.device.type == "cuda":  # on the CPU the last reference frees the tensors; a full collection of a
            gc.collect()  # process holding torch and transformers costs about 0.5 s
            torch.cuda.empty_cache()


@dataclass(frozen=True)
class EmbeddedChunk:
    """Embeddings of a chunk's unique queries and documents, and each pair's rows in them."""

    query_vectors: np.ndarray
    doc_vectors: np.ndarray
    query_row: np.ndarray
    doc_row: np.ndarray


class BiEncoderTeacher(Teacher):
    """A bi-encoder teacher: ``s(q, d) = <e(q), e(d)>`` (``dot``) or the cosine of the two embeddings."""

    kind = "bi"

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__(config)
        from rankdistill.models.embeddings import load_sentence_transformer

        self.path = resolve_model(config.model)
        self.device = resolve_device(config.device)
        st = load_sentence_transformer(config.model, device=str(self.device))
        self.max_length = config.max_length or int(getattr(st, "max_seq_length", None) or 512)
        self.similarity = config.similarity

    def identity(self) -> dict:
        return {"kind": "bi", "model": model_id(self.config.model), "weights": weights_digest(self.path),
                "score_space": self.similarity, "max_length": self.max_length}

    def info(self) -> dict:
        return {**super().info(), "device": self.device.type, "dtype": "float32"}

    def _encode(self, texts: list[str]) -> np.ndarray:
        from rankdistill.models.embeddings import encode_texts

        return encode_texts(texts, self.config.model, batch_size=self.config.batch_size, max_length=self.max_length,
                            normalize=self.similarity == "cosine", device=str(self.device),
                            cache_dir=self.config.embedding_cache)

    def prepare(self, queries: Sequence[str], docs: Sequence[str]) -> EmbeddedChunk:
        uq = list(dict.fromkeys(queries))
        ud = list(dict.fromkeys(docs))
        qpos = {t: i for i, t in enumerate(uq)}
        dpos = {t: i for i, t in enumerate(ud)}
        return EmbeddedChunk(self._encode(uq), self._encode(ud),
                             np.fromiter((qpos[t] for t in queries), dtype=np.int64, count=len(queries)),
                             np.fromiter((dpos[t] for t in docs), dtype=np.int64, count=len(docs)))

    def run(self, prepared: EmbeddedChunk) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(prepared.query_row)
        bs = max(self.config.batch_size, 1024)
        for start in range(0, n, bs):
            idx = np.arange(start, min(start + bs, n))
            q = prepared.query_vectors[prepared.query_row[idx]].astype(np.float64)
            d = prepared.doc_vectors[prepared.doc_row[idx]].astype(np.float64)
            yield idx, np.einsum("ij,ij->i", q, d)


def load_teacher(config: TeacherConfig) -> Teacher:
    """Load the teacher ``config`` names (``kind=auto`` looks at the model's files, see :func:`detect_kind`).

    A cross-fitted teacher's folder (:mod:`rankdistill.teachers.crossfit`) loads as one teacher whose members
    get ``config``'s settings (``kind`` then applies to the members)."""
    from rankdistill.teachers.crossfit import CrossFitTeacher, is_crossfit

    if is_crossfit(config.model):
        return CrossFitTeacher(config)
    kind = detect_kind(config.model) if config.kind == "auto" else config.kind
    if kind == "cross":
        return CrossEncoderTeacher(config)
    return BiEncoderTeacher(config)


def describe(info: dict) -> str:
    """One line naming a teacher's settings (for logs and errors)."""
    return json.dumps(info, sort_keys=True)
