"""Bi-encoder student: one shared encoder for queries and documents, CLS or mask-aware mean pooling, dot
product or cosine similarity.

Saved directories load without rankdistill in ``sentence_transformers.SentenceTransformer`` (modules
Transformer -> Pooling [-> Normalize], ``similarity_fn_name`` dot or cosine) and in
``transformers.AutoModel``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write
from rankdistill.models import resolve_model
from rankdistill.models.backbone import load_encoder, read_metadata, save_backbone, write_metadata
from rankdistill.models.inputs import TokenBatch

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
SIMILARITIES = ("dot", "cosine")


@dataclass(frozen=True)
class BiEncoderSettings:
    """How a bi-encoder turns token states into scores, and how much text it reads."""

    pooling: str = "cls"
    similarity: str = "dot"
    max_query_length: int = 32
    max_doc_length: int = 192

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise UserInputError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
        if self.similarity not in SIMILARITIES:
            raise UserInputError(f"unknown similarity {self.similarity!r}; valid: {', '.join(SIMILARITIES)}")
        if self.max_query_length < 4 or self.max_doc_length < 4:
            raise UserInputError("max query/document lengths must be at least 4 tokens")


@dataclass(frozen=True)
class BiEncoderOutput:
    """Query embeddings ``[B, D]``, document embeddings ``[B * G, D]`` (group-major)."""

    query_embeddings: Tensor
    doc_embeddings: Tensor


def settings_from_dir(path: str | Path) -> dict:
    """What a model directory says about pooling, similarity and lengths (rankdistill metadata first, then
    the sentence-transformers configs); keys absent when it says nothing."""
    d = Path(path)
    meta = read_metadata(d)
    if meta is not None and meta.get("arch") == "bi":
        return {k: meta[k] for k in ("pooling", "similarity", "max_query_length", "max_doc_length") if k in meta}
    found: dict = {}
    pooling_cfg = d / "1_Pooling" / "config.json"
    with contextlib.suppress(OSError, json.JSONDecodeError):
        cfg = json.loads(pooling_cfg.read_text())
        mode = cfg.get("pooling_mode")
        if mode is None:
            mode = "cls" if cfg.get("pooling_mode_cls_token") else "mean" if cfg.get(
                "pooling_mode_mean_tokens") else "other"
        found["pooling"] = mode if mode in POOLINGS else f"unsupported:{mode}"
    with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
        modules = json.loads((d / "modules.json").read_text())
        if any(str(m.get("type", "")).endswith("Normalize") for m in modules):
            found["similarity"] = "cosine"
        else:
            st = json.loads((d / "config_sentence_transformers.json").read_text())
            sim = st.get("similarity_fn_name") or "cosine"
            found["similarity"] = {"dot_product": "dot"}.get(sim, sim)
    with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
        n = json.loads((d / "sentence_bert_config.json").read_text()).get("max_seq_length")
        if isinstance(n, int):
            found["max_doc_length"] = n
    return found


class BiEncoder(nn.Module):
    """A shared transformer encoder with pooling; scores are dot products (of unit vectors for cosine)."""

    arch = "bi"

    def __init__(self, encoder: nn.Module, settings: BiEncoderSettings, tokenizer: object = None,
                 source: str = "") -> None:
        super().__init__()
        self.encoder = encoder
        self.settings = settings
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, nn.Module):  # BERT's pooler head is not used by CLS/mean pooling: keep it as is
            pooler.requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, *, pooling: str | None = None,
                        similarity: str | None = None, layers: int | None = None,
                        max_query_length: int | None = None, max_doc_length: int | None = None) -> BiEncoder:
        """Load an encoder; unset options come from the directory (rankdistill or sentence-transformers
        config), then the defaults of :class:`BiEncoderSettings`."""
        encoder, tokenizer, path = load_encoder(name_or_path, layers)
        # a sentence-transformers folder with its transformer in a sub-folder keeps pooling and normalisation
        # beside it, at the root: the root's settings first, then the sub-folder's
        found = {**settings_from_dir(path), **settings_from_dir(resolve_model(name_or_path))}
        if str(found.get("pooling", "")).startswith("unsupported:") and pooling is None:
            raise UserInputError(f"{path} pools with {found['pooling'].split(':', 1)[1]!r}, which is not "
                                 "supported", fix="pass --pooling cls or --pooling mean")
        chosen = {"pooling": pooling, "similarity": similarity, "max_query_length": max_query_length,
                  "max_doc_length": max_doc_length}
        values = {k: v if v is not None else found.get(k) for k, v in chosen.items()}
        limit = getattr(encoder.config, "max_position_embeddings", None)
        if isinstance(limit, int):  # lengths nobody asked for are capped at the model's position table
            for key in ("max_query_length", "max_doc_length"):
                if values[key] is None:
                    values[key] = min(getattr(BiEncoderSettings, key), limit)
        settings = BiEncoderSettings(**{k: v for k, v in values.items() if v is not None})
        longest = max(settings.max_query_length, settings.max_doc_length)
        if isinstance(limit, int) and longest > limit:
            raise UserInputError(f"max length {longest} exceeds the model's {limit} positions",
                                 fix=f"pass --max-doc-length/--max-query-length {limit} or less")
        return cls(encoder, settings, tokenizer, path)

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def embed(self, tokens: TokenBatch) -> Tensor:
        """Pooled (and for cosine L2-normalised) embeddings ``[N, D]`` in float32.

        ``cls``: ``e = h_0``; ``mean``: ``e = sum_t m_t h_t / sum_t m_t`` over the token states ``h_t`` with the
        attention mask ``m`` (padding excluded), as sentence-transformers' ``Pooling``. For cosine similarity
        ``e / ||e||``, so that the dot product of two embeddings is their cosine.
        """
        states = self.encoder(**tokens.model_inputs()).last_hidden_state
        if self.settings.pooling == "cls":
            emb = states[:, 0].float()
        else:
            mask = tokens.attention_mask.unsqueeze(-1).float()  # sums in float32 also under bf16 autocast
            emb = (states.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.settings.similarity == "cosine":
            emb = F.normalize(emb, dim=-1)
        return emb

    def forward(self, queries: TokenBatch, docs: TokenBatch) -> BiEncoderOutput:
        return BiEncoderOutput(self.embed(queries), self.embed(docs))

    @staticmethod
    def group_scores(query_embeddings: Tensor, doc_embeddings: Tensor) -> Tensor:
        """Scores ``[B, G]`` of each query against its own group (documents are group-major ``[B * G, D]``)."""
        b = query_embeddings.shape[0]
        docs = doc_embeddings.view(b, -1, doc_embeddings.shape[-1])
        return torch.einsum("bd,bgd->bg", query_embeddings, docs)

    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write the model so that ``SentenceTransformer(directory)`` and ``AutoModel`` load it."""
        d = Path(directory)
        save_backbone(self.encoder, self.tokenizer, d)
        s = self.settings
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if s.similarity == "cosine":
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (d / "2_Normalize").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": self.dim, "pooling_mode_cls_token": s.pooling == "cls",
                   "pooling_mode_mean_tokens": s.pooling == "mean", "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}
        files = {
            "modules.json": modules,
            "1_Pooling/config.json": pooling,
            "sentence_bert_config.json": {"max_seq_length": s.max_doc_length, "do_lower_case": False},
            "config_sentence_transformers.json": {"similarity_fn_name": s.similarity, "prompts": {},
                                                  "default_prompt_name": None},
        }
        for name, content in files.items():
            with atomic_write(d / name) as fh:
                json.dump(content, fh, indent=2)
                fh.write("\n")
        write_metadata(d, {"arch": "bi", **asdict(s), "score": f"{s.similarity} product of pooled embeddings"
                           if s.similarity == "dot" else "cosine similarity", **(extra or {})})

    def with_settings(self, **changes: object) -> BiEncoder:
        return BiEncoder(self.encoder, replace(self.settings, **changes), self.tokenizer, self.source)
