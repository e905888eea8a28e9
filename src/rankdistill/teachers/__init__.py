"""Teacher scoring and the persistent score store.

- :class:`ScoreStore`: scores keyed by (teacher, query, doc) in SQLite; incremental, crash-safe, exportable.
- :func:`load_teacher` / :class:`TeacherConfig`: cross-encoder or bi-encoder teachers.
- :class:`CrossFitTeacher`, :func:`assign_folds`, :func:`write_crossfit`: cross-fitted teachers (each query scored
  by the members that did not train on it).
- :func:`score_pairs`, :func:`score_ensemble`, :class:`TeacherScores`: the scoring engine.

``ScoreStore`` is imported eagerly (no torch); the model-side names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from rankdistill.teachers.store import ScoreStore

_LAZY = {
    "CorpusTexts": "engine", "EnsembleConfig": "engine", "ScoringReport": "engine", "TeacherScores": "engine",
    "score_ensemble": "engine", "score_pairs": "engine", "unique_pairs": "engine",
    "BiEncoderTeacher": "models", "CrossEncoderTeacher": "models", "Teacher": "models",
    "TeacherConfig": "models", "detect_kind": "models", "load_teacher": "models",
    "CrossFitTeacher": "crossfit", "assign_folds": "crossfit", "read_crossfit": "crossfit",
    "write_crossfit": "crossfit",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"rankdistill.teachers.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'rankdistill.teachers' has no attribute {name!r}")


__all__ = ["ScoreStore", *sorted(_LAZY)]
