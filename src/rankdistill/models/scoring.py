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
    """Load a saved student, detecting bi- or cross-encoder from the folder unless ``arch`` is given."""
    said = detect_arch(directory, guess=False)  # None: the folder does not say, and --arch may
    if arch == "cross" and said == "bi":
        raise UserInputError("--arch cross on a model without a ranking head: it would re-rank with a new, untrained "
                             "head", path=directory,
                             fix="leave out --arch (this folder is a bi-encoder), or give a trained cross-encoder")
    kind = arch or said or "bi"
    if kind == "bi":
        return BiEncoder.from_pretrained(str(directory))
    return CrossEncoder.from_pretrained(str(directory))


@torch.inference_mode()
def score_candidates(model: BiEncoder | CrossEncoder, queries: Mapping[str, str], corpus, candidates: Run, *,
                     batch_size: int | None = None, device: str = "auto", progress: bool = True) -> Run:
    """Student scores of every ``(query, document)`` in ``candidates`` (``corpus.text(doc_id)`` gives texts).

    ``batch_size`` defaults to 64 texts or pairs per forward pass on a CPU and 512 on a GPU.
    """
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
