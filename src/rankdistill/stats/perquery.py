"""Per-query metric values of several systems, loaded from ``evaluate --per-query`` files and aligned.

A file holds ``query_id<TAB>measure<TAB>value`` rows (read by :func:`rankdistill.evaluation.read_per_query`).
Alignment puts every system on the same queries in the same order. A query missing from some system is
*reported* (:attr:`Alignment.missing`), never silently dropped, and handled by an explicit policy:

- ``drop``: compare on the queries every system has (the intersection);
- ``zero``: a missing query scores 0 for that system (``trec_eval -c``: a run that returned nothing);
- ``error``: refuse.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankdistill.errors import UserInputError

logger = logging.getLogger(__name__)

MISSING_POLICIES: tuple[str, ...] = ("drop", "zero", "error")


@dataclass(frozen=True)
class SystemScores:
    """One system's per-query values of one measure."""

    name: str
    values: dict[str, float]
    source: str = ""


@dataclass(frozen=True)
class Alignment:
    """Systems on common queries: ``matrix[i, j]`` is system ``names[i]`` on query ``query_ids[j]``."""

    names: tuple[str, ...]
    query_ids: tuple[str, ...]
    matrix: np.ndarray
    missing: dict[str, tuple[str, ...]]
    policy: str

    def values(self, name: str) -> np.ndarray:
        return self.matrix[self.names.index(name)]


def load_per_query(paths: Sequence[str | Path], metric: str | None = None,
                   names: Sequence[str] | None = None) -> tuple[list[SystemScores], str]:
    """Read per-query files and pick one measure; returns the systems and the measure used.

    Without ``metric`` the measure must be the only one all files share. Files that lack the measure,
    share no measure, hold NaN, or repeat a system name raise :class:`UserInputError` naming the file.
    """
    from rankdistill.evaluation import read_per_query

    if names is not None and len(names) != len(paths):
        raise UserInputError(f"{len(names)} names for {len(paths)} per-query files", fix="give one name per file")
    tables = [(Path(p), read_per_query(p)) for p in paths]
    if metric is None:
        common = set.intersection(*(set(t) for _, t in tables))
        if len(common) != 1:
            listing = "; ".join(f"{p.name}: {', '.join(sorted(t))}" for p, t in tables)
            what = "no measure common to all" if not common else "several common measures in"
            raise UserInputError(f"{what} the per-query files ({listing})", fix="name one with --metric")
        metric = common.pop()
    systems = []
    for i, (p, table) in enumerate(tables):
        if metric not in table:
            raise UserInputError(f"no values of measure {metric!r} (it has: {', '.join(sorted(table))})", path=p,
                                 fix="evaluate every run with the same --metrics, or pick a shared --metric")
        bad = [q for q, v in table[metric].items() if not math.isfinite(v)]
        if bad:
            raise UserInputError(f"{len(bad)} non-finite value(s) of {metric}, e.g. query {bad[0]!r}", path=p,
                                 fix="re-run `rankdistill evaluate --per-query` for this run")
        name = names[i] if names is not None else _default_name(p, [q for q, _ in tables])
        systems.append(SystemScores(name, dict(table[metric]), str(p)))
    seen: dict[str, str] = {}
    for s in systems:
        if s.name in seen:
            raise UserInputError(f"two per-query files give the system name {s.name!r} ({seen[s.name]}, {s.source})",
                                 fix="pass distinct files, or name them with --names")
        seen[s.name] = s.source
    return systems, metric


def _default_name(path: Path, all_paths: Sequence[Path]) -> str:
    """The file name without its extension(s), or the parent folder too when names would collide."""
    def stem(p: Path) -> str:
        name = p.name
        for ext in (".gz", ".tsv", ".txt"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        return name

    if sum(1 for p in all_paths if stem(p) == stem(path)) > 1:
        return f"{path.parent.name}/{stem(path)}"
    return stem(path)


def align(systems: Sequence[SystemScores], policy: str = "drop") -> Alignment:
    """Align systems on query ids under a missing-query ``policy`` (see the module docstring)."""
    if policy not in MISSING_POLICIES:
        raise UserInputError(f"unknown missing-query policy {policy!r}; known: {', '.join(MISSING_POLICIES)}")
    if not systems:
        raise UserInputError("no systems to compare")
    union = set().union(*(s.values for s in systems))
    missing = {s.name: tuple(sorted(union - set(s.values))) for s in systems}
    missing = {k: v for k, v in missing.items() if v}
    for name, qids in missing.items():
        logger.warning("%s lacks %d of %d queries (e.g. %s); policy %r", name, len(qids), len(union),
                       ", ".join(qids[:3]), policy)
    if missing and policy == "error":
        name, qids = next(iter(missing.items()))
        src = next(s.source for s in systems if s.name == name)
        raise UserInputError(f"system {name} lacks {len(qids)} queries the others have (e.g. {qids[0]!r})",
                             path=src or None, fix="use --missing drop or --missing zero")
    if policy == "drop":
        common = set.intersection(*(set(s.values) for s in systems))
        if not common:
            raise UserInputError("the per-query files have no query in common",
                                 fix="check that every run was evaluated on the same dataset and split")
        qids = sorted(common)
        matrix = np.array([[s.values[q] for q in qids] for s in systems], dtype=np.float64)
    else:
        qids = sorted(union)
        matrix = np.array([[s.values.get(q, 0.0) for q in qids] for s in systems], dtype=np.float64)
    return Alignment(tuple(s.name for s in systems), tuple(qids), matrix, missing, policy)


__all__ = ["MISSING_POLICIES", "Alignment", "SystemScores", "align", "load_per_query"]
