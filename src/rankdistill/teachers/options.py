"""Choices of the teacher options, importable without torch (the CLI builds its parsers from them)."""

from __future__ import annotations

TEACHER_KINDS: tuple[str, ...] = ("auto", "cross", "bi")
"""``cross``: a cross-encoder; ``bi``: a bi-encoder; ``auto``: decided from the model's files."""

SCORE_SPACES: tuple[str, ...] = ("logit", "log_p_rel", "log_odds")
"""Cross-encoder score spaces (see :mod:`rankdistill.teachers.spaces`); ``auto`` picks one from the head."""

SIMILARITIES: tuple[str, ...] = ("dot", "cosine")
"""Bi-encoder scores: dot product or cosine of the embeddings."""

DTYPE_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
"""Inference dtypes; ``auto`` is bfloat16 (or float16) on a GPU and float32 on a CPU."""
