"""Cross-encoder student: a transformer over ``[CLS] query [SEP] document [SEP]`` with a one-logit head.

The score is the logit (recorded as ``"score": "logit"`` in ``rankdistill.json``). Saved directories load
without rankdistill in ``sentence_transformers.CrossEncoder`` (whose ``predict`` then returns the same logit:
the activation is set to identity) and in ``transformers.AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import Tensor, nn

from rankdistill.errors import UserInputError
from rankdistill.models.backbone import load_classifier, read_metadata, save_backbone, write_metadata
from rankdistill.models.inputs import TokenBatch

logger = logging.getLogger(__name__)

IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class CrossEncoderSettings:
    """Token budget of a (query, document) pair: the whole pair, and the query's share of it."""

    max_length: int = 256
    max_query_length: int = 32

    def __post_init__(self) -> None:
        if self.max_query_length < 1 or self.max_length < self.max_query_length + 4:
            raise UserInputError(f"max length {self.max_length} must exceed the query length "
                                 f"{self.max_query_length} by at least 4 tokens")


class CrossEncoder(nn.Module):
    """Scores each (query, document) pair jointly; ``forward`` returns logits ``[N]``."""

    arch = "cross"

    def __init__(self, model: nn.Module, settings: CrossEncoderSettings, tokenizer: object = None,
                 source: str = "") -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, *, layers: int | None = None,
                        max_length: int | None = None, max_query_length: int | None = None) -> CrossEncoder:
        """Load a one-logit classifier (a plain encoder gets a new head); unset lengths come from the
        directory's rankdistill metadata, then the defaults."""
        model, tokenizer, path = load_classifier(name_or_path, layers)
        meta = read_metadata(path) or {}
        found = {k: meta[k] for k in ("max_length", "max_query_length") if meta.get("arch") == "cross" and k in meta}
        if max_length is not None:
            found["max_length"] = max_length
        if max_query_length is not None:
            found["max_query_length"] = max_query_length
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and "max_length" not in found:  # a default is capped at the position table
            found["max_length"] = min(CrossEncoderSettings.max_length, limit)
        settings = CrossEncoderSettings(**found)
        if isinstance(limit, int) and settings.max_length > limit:
            raise UserInputError(f"max length {settings.max_length} exceeds the model's {limit} positions",
                                 fix=f"pass --max-length {limit} or less")
        return cls(model, settings, tokenizer, path)

    def forward(self, pairs: TokenBatch) -> Tensor:
        return self.model(**pairs.model_inputs()).logits.squeeze(-1).float()

    def save(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write the model so that ``CrossEncoder(directory)`` and ``transformers`` load it."""
        d = Path(directory)
        self.model.config.sentence_transformers = {"activation_fn": IDENTITY_ACTIVATION}
        self.tokenizer.model_max_length = self.settings.max_length  # type: ignore[attr-defined]
        save_backbone(self.model, self.tokenizer, d)
        write_metadata(d, {"arch": "cross", **asdict(self.settings), "score": "logit", **(extra or {})})
