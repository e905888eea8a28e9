"""Teacher scoring and the persistent score store."""

from rankdistill.teachers.store import ScoreStore

__all__ = ["ScoreStore"]
