"""What every first-stage retriever's ``search`` checks before it does any work."""

from __future__ import annotations

from collections.abc import Mapping

from rankdistill.data.runs import check_cutoff


def check_search(queries: object, k: object) -> None:
    """Raise unless ``queries`` maps query ids to texts and ``k`` is an integer >= 0 (``TypeError`` for a list
    of texts, which would otherwise fail deep inside the index, ``ValueError`` for a negative ``k``)."""
    if not isinstance(queries, Mapping):
        raise TypeError(f"queries must map query ids to texts, got {type(queries).__name__}, e.g. "
                        "{'q1': 'wing flutter'}")
    check_cutoff(k, optional=False)
