"""Teacher scoring and the persistent score store.

- :class:`ScoreStore`: scores keyed by (teacher, query, doc) in SQLite; incremental, crash-safe, exportable.
- :func:`load_teacher` / :class:`TeacherConfig`: cross-encoder or bi-encoder teachers.
- :class:`CrossFitTeacher`, :func:`assign_folds`, :func:`write_crossfit`: cross-fitted teachers (each query scored
  by the members that did not train on it).
- :func:`score_pairs`, :func:`score_ensemble`, :class:`TeacherScores`: the scoring engine;
  :func:`read_group_pairs` and :func:`dataset_queries` give it a groups file's pairs and a dataset's queries.

``ScoreStore`` is imported eagerly (no torch); the model-side names load on first use.
"""

from __future__ import annotations

from rankdistill._lazy import lazy_exports
from rankdistill.teachers.store import ScoreStore

_LAZY = {
    "CorpusTexts": "engine", "EnsembleConfig": "engine", "ScoringReport": "engine", "TeacherScores": "engine",
    "score_ensemble": "engine", "score_pairs": "engine", "unique_pairs": "engine",
    "BiEncoderTeacher": "models", "CrossEncoderTeacher": "models", "Teacher": "models",
    "TeacherConfig": "models", "detect_kind": "models", "load_teacher": "models",
    "CrossFitTeacher": "crossfit", "assign_folds": "crossfit", "read_crossfit": "crossfit",
    "write_crossfit": "crossfit", "dataset_queries": "pairs", "read_group_pairs": "pairs",
}

__all__ = ["ScoreStore", *sorted(_LAZY)]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
