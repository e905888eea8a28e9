"""Teacher scoring and the persistent score store.

- :class:`ScoreStore`: scores keyed by (teacher, query, doc) in SQLite; incremental, crash-safe, exportable.
- :func:`load_teacher` / :class:`TeacherConfig`: cross-encoder or bi-encoder teachers.
- :func:`score_pairs`, :func:`score_ensemble`, :class:`TeacherScores`: the scoring engine.
"""

from rankdistill.teachers.engine import (
    CorpusTexts,
    EnsembleConfig,
    ScoringReport,
    TeacherScores,
    score_ensemble,
    score_pairs,
    unique_pairs,
)
from rankdistill.teachers.models import (
    BiEncoderTeacher,
    CrossEncoderTeacher,
    Teacher,
    TeacherConfig,
    detect_kind,
    load_teacher,
)
from rankdistill.teachers.store import ScoreStore

__all__ = [
    "BiEncoderTeacher", "CorpusTexts", "CrossEncoderTeacher", "EnsembleConfig", "ScoreStore", "ScoringReport",
    "Teacher", "TeacherConfig", "TeacherScores", "detect_kind", "load_teacher", "score_ensemble", "score_pairs",
    "unique_pairs",
]
