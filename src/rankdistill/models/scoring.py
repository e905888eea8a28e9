"""Scoring (query, document) candidates with a trained student: the engine behind ``rankdistill rerank``.

Texts are tokenised once and batched in order of length (little padding); a bi-encoder embeds each
distinct query and document once and scores by its similarity, a cross-encoder scores each pair's logit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rankdistill.data.runs import Run, check_cutoff, ranked
from rankdistill.errors import UserInputError
from rankdistill.models.backbone import detect_arch
from rankdistill.models.bi_encoder import BiEncoder
from rankdistill.models.cross_encoder import CrossEncoder
from rankdistill.teachers.runtime import resolve_device

logger = logging.getLogger(__name__)


def load_student(directory: str | Path, arch: str | None = None) -> BiEncoder | CrossEncoder:
    """Load a saved student, detecting bi- or cross-encoder from the folder unless ``arch`` (``"bi"`` or
    ``"cross"``) is given. An ``arch`` the folder contradicts is refused: a bi-encoder loaded as a cross-encoder
    would score with a new, untrained head, and a cross-encoder loaded as a bi-encoder would lose its head."""
    if arch not in (None, "bi", "cross"):
        raise UserInputError(f"unknown student architecture {arch!r}", fix="use 'bi', 'cross', or None to detect it")
    said = detect_arch(directory, guess=False)  # None: the folder does not say, and --arch may
    if arch == "cross" and said == "bi":
        raise UserInputError("--arch cross on a model without a ranking head: it would re-rank with a new, untrained "
                             "head", path=directory,
                             fix="leave out --arch (this folder is a bi-encoder), or give a trained cross-encoder")
    if arch == "bi" and said == "cross":
        raise UserInputError("--arch bi on a cross-encoder: it would embed with its backbone and drop its trained "
                             "head", path=directory, fix="leave out --arch (this folder is a cross-encoder)")
    kind = arch or said or "bi"
    if kind == "bi":
        return BiEncoder.from_pretrained(str(directory))
    return CrossEncoder.from_pretrained(str(directory))


def _texts_of(corpus):
    """``corpus`` as something with ``text(doc_id)``: a document store as it is, a dataset's corpus, or a
    ``{doc_id: text}`` mapping."""
    if hasattr(corpus, "text"):
        return corpus
    if hasattr(corpus, "corpus") and hasattr(corpus.corpus, "text"):  # a Dataset
        return corpus.corpus
    if isinstance(corpus, Mapping):
        class _Texts:
            text = staticmethod(corpus.__getitem__)

            def __contains__(self, doc_id: object) -> bool:
                return doc_id in corpus

        return _Texts()
    raise TypeError(f"corpus must be a document store (dataset.corpus), a dataset or a {{doc_id: text}} mapping, "
                    f"got {type(corpus).__name__}")


def _check_candidates(queries: Mapping[str, str], corpus, candidates: Run) -> None:
    """Every query of ``candidates`` has a text and every document is in ``corpus`` (else a KeyError from the
    middle of the tokenisation)."""
    from rankdistill.data.docstore import unknown_ids

    if not isinstance(candidates, Mapping) or not isinstance(queries, Mapping):
        raise TypeError("queries must map query ids to texts and candidates query ids to {doc_id: score}, got "
                        f"{type(queries).__name__} and {type(candidates).__name__}")
    textless = [q for q in candidates if q not in queries]
    if textless:
        raise UserInputError(f"{len(textless)} candidate queries have no text (e.g. {', '.join(textless[:3])})",
                             fix="pass the queries of the split the candidates were made for")
    if not hasattr(corpus, "__contains__"):  # an object with text() alone: its own errors stand
        return
    unknown = list(dict.fromkeys(unknown_ids(corpus, (d for docs in candidates.values() for d in docs))))
    if unknown:
        raise UserInputError(f"{len(unknown)} candidate document(s) are not in the corpus "
                             f"(e.g. {', '.join(unknown[:3])})", fix="use candidates made for this corpus")


@torch.inference_mode()
def score_candidates(model: BiEncoder | CrossEncoder, queries: Mapping[str, str], corpus, candidates: Run, *,
                     batch_size: int | None = None, device: str = "auto", progress: bool = True,
                     check: bool = True) -> Run:
    """Student scores of every ``(query, document)`` in ``candidates`` (``corpus.text(doc_id)`` gives texts).

    ``corpus`` is a document store, a dataset (its corpus is used) or a ``{doc_id: text}`` mapping. A candidate
    query without a text in ``queries``, or a document not in ``corpus``, is refused before any work (unless
    ``check`` is false: a caller that checked them already, like ``rankdistill rerank``).
    ``batch_size`` defaults to 64 texts or pairs per forward pass on a CPU and 512 on a GPU.
    """
    corpus = _texts_of(corpus)
    if check:
        _check_candidates(queries, corpus, candidates)
    from rankdistill.training.tokens import InputTemplate, TokenCache, encode_pairs, encode_singles

    dev = resolve_device(device)
    batch_size = batch_size or (512 if dev.type == "cuda" else 64)
    model.to(dev).eval()
    tok = model.tokenizer
    template = InputTemplate.from_tokenizer(tok)
    pad = int(tok.pad_token_id or 0)  # type: ignore[attr-defined]
    use_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16)
    doc_ids = list(dict.fromkeys(d for docs in candidates.values() for d in docs))
    out: Run = {q: {} for q in candidates}
    if isinstance(model, BiEncoder):
        s = model.settings
        qcache = TokenCache(tok, s.max_query_length, "queries")
        dcache = TokenCache(tok, s.max_doc_length, "documents")
        qcache.add(((q, queries[q]) for q in candidates), progress=progress, total=len(candidates))
        dcache.add(((d, corpus.text(d)) for d in doc_ids), progress=progress, total=len(doc_ids))

        def embed(keys: list[str], cache: TokenCache, max_length: int, what: str) -> dict[str, torch.Tensor]:
            order = sorted(keys, key=cache.length, reverse=True)
            found: dict[str, torch.Tensor] = {}
            for start in tqdm(range(0, len(order), batch_size), desc=f"encoding {what}", unit=" batches",
                              disable=not progress or None, leave=False):
                chunk = order[start:start + batch_size]
                batch = encode_singles(template, cache, chunk, max_length, pad).to(dev)
                with autocast:
                    emb = model.embed(batch).float()
                found.update(zip(chunk, emb))
            return found

        qemb = embed(list(candidates), qcache, s.max_query_length, "queries")
        demb = embed(doc_ids, dcache, s.max_doc_length, "documents")
        for q, docs in candidates.items():
            ids = list(docs)
            if not ids:  # a query without candidates (e.g. BM25 found no term of it): no scores
                continue
            scores = torch.stack([demb[d] for d in ids]) @ qemb[q]
            out[q] = dict(zip(ids, scores.cpu().tolist()))
        return out
    cs = model.settings
    qcache = TokenCache(tok, cs.max_query_length, "queries")
    dcache = TokenCache(tok, cs.max_length, "documents")
    qcache.add(((q, queries[q]) for q in candidates), progress=progress, total=len(candidates))
    dcache.add(((d, corpus.text(d)) for d in doc_ids), progress=progress, total=len(doc_ids))
    pairs = [(q, d) for q, docs in candidates.items() for d in docs]
    pairs.sort(key=lambda p: qcache.length(p[0]) + dcache.length(p[1]), reverse=True)
    logits = []  # kept on the device: one transfer at the end instead of a synchronisation per batch
    for start in tqdm(range(0, len(pairs), batch_size), desc="scoring pairs", unit=" batches",
                      disable=not progress or None, leave=False):
        chunk = pairs[start:start + batch_size]
        batch = encode_pairs(template, qcache, dcache, chunk, cs.max_length, pad).to(dev, non_blocking=True)
        with autocast:
            logits.append(model(batch).float())
    values = torch.cat(logits).cpu().tolist() if logits else []
    for (q, d), v in zip(pairs, values):
        out[q][d] = v
    return out


def top_k(run: Run, k: int | None) -> Run:
    """Each query's ``k`` best documents (all when ``k`` is ``None``), ties broken by doc id."""
    if k is None:
        return run
    check_cutoff(k)
    return {q: dict(ranked(docs)[:k]) for q, docs in run.items()}
