"""Whole studies: the config (:func:`load_config`), the runner (:class:`Study`, behind ``rankdistill run``),
the artifact cache (:class:`ArtifactStore`) and the results bundle that carries a study between machines
(:func:`pack`, :func:`unpack`)."""

from rankdistill._lazy import lazy_exports

_LAZY = {"StudyConfig": "config", "load_config": "config", "Study": "runner", "ArtifactStore": "artifacts",
         "pack": "bundle", "unpack": "bundle"}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
