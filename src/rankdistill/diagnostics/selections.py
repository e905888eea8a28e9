"""Selections of training queries by a per-query statistic, with names that say what they keep.

A selection is a quantile band ``(lo, hi]`` of one statistic's distribution over the queries (the lower
edge is inclusive when ``lo = 0`` so that the minimum is kept): with ``v_lo`` and ``v_hi`` the ``lo`` and
``hi`` quantiles (linear interpolation) of the finite values, a query with value ``v`` is kept when
``v_lo < v <= v_hi`` (``v_lo <= v <= v_hi`` for ``lo = 0``). Adjacent bands therefore partition the queries:
``keep_lower_quartile``, ``keep_second_quartile``, ``keep_third_quartile`` and ``keep_upper_quartile`` keep
disjoint sets whose union is everything. (The paper's ``upper_quartile`` function *dropped* the upper
quartile; here every name states the kept part.)

The registry :data:`SELECTIONS` is a plain dict from name to :class:`QuantileBand`; an unknown name lists the
known ones. :func:`select_groups` applies a band to a groups file and writes the kept groups with a sidecar
that records the rule, the statistic, the thresholds and the counts.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankdistill.data.groups import read_groups, write_groups
from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, require_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantileBand:
    """Keep the queries whose statistic lies in the quantile band ``(lo, hi]`` (``[0, hi]`` when lo = 0)."""

    name: str
    lo: float
    hi: float
    description: str

    def __post_init__(self) -> None:
        if not (0.0 <= self.lo < self.hi <= 1.0):
            raise UserInputError(f"quantile band ({self.lo}, {self.hi}] is empty or outside [0, 1]",
                                 fix="give 0 <= lo < hi <= 1")


SELECTIONS: dict[str, QuantileBand] = {}
"""Named selections: ``name -> QuantileBand``."""


def register_selection(name: str, lo: float, hi: float) -> Callable[[Callable], Callable]:
    """Decorator: register a named band; the decorated function's docstring is its description."""

    def deco(fn: Callable) -> Callable:
        SELECTIONS[name] = QuantileBand(name, lo, hi, (fn.__doc__ or name).strip().splitlines()[0])
        return fn

    return deco


def keep_quantile_band(lo: float, hi: float) -> QuantileBand:
    """The band between the ``lo`` and ``hi`` quantiles: keeps ``v_lo < v <= v_hi`` (``v >= min`` if lo = 0)."""
    return QuantileBand(f"keep_quantile_band({lo:g},{hi:g})", float(lo), float(hi),
                        f"keeps queries between the {lo:g} and {hi:g} quantiles")


@register_selection("keep_lower_quartile", 0.0, 0.25)
def keep_lower_quartile() -> QuantileBand:
    """Keeps queries at or below the 25th percentile."""
    return SELECTIONS["keep_lower_quartile"]


@register_selection("keep_second_quartile", 0.25, 0.5)
def keep_second_quartile() -> QuantileBand:
    """Keeps queries above the 25th percentile and at or below the median."""
    return SELECTIONS["keep_second_quartile"]


@register_selection("keep_third_quartile", 0.5, 0.75)
def keep_third_quartile() -> QuantileBand:
    """Keeps queries above the median and at or below the 75th percentile."""
    return SELECTIONS["keep_third_quartile"]


@register_selection("keep_upper_quartile", 0.75, 1.0)
def keep_upper_quartile() -> QuantileBand:
    """Keeps queries above the 75th percentile."""
    return SELECTIONS["keep_upper_quartile"]


@register_selection("drop_upper_quartile", 0.0, 0.75)
def drop_upper_quartile() -> QuantileBand:
    """Keeps queries at or below the 75th percentile (drops the upper quartile)."""
    return SELECTIONS["drop_upper_quartile"]


@register_selection("drop_lower_quartile", 0.25, 1.0)
def drop_lower_quartile() -> QuantileBand:
    """Keeps queries above the 25th percentile (drops the lower quartile)."""
    return SELECTIONS["drop_lower_quartile"]


@register_selection("keep_below_median", 0.0, 0.5)
def keep_below_median() -> QuantileBand:
    """Keeps queries at or below the median."""
    return SELECTIONS["keep_below_median"]


@register_selection("keep_above_median", 0.5, 1.0)
def keep_above_median() -> QuantileBand:
    """Keeps queries above the median."""
    return SELECTIONS["keep_above_median"]


@register_selection("keep_interquartile", 0.25, 0.75)
def keep_interquartile() -> QuantileBand:
    """Keeps queries above the 25th and at or below the 75th percentile (drops both outer quartiles)."""
    return SELECTIONS["keep_interquartile"]


def get_selection(name: str, lo: float | None = None, hi: float | None = None) -> QuantileBand:
    """A named selection, or ``keep_quantile_band`` with ``lo``/``hi``; unknown names list the known ones."""
    if name == "keep_quantile_band":
        if lo is None or hi is None:
            raise UserInputError("keep_quantile_band needs both quantiles", fix="give --lo and --hi")
        return keep_quantile_band(lo, hi)
    if name not in SELECTIONS:
        known = ", ".join(["keep_quantile_band", *sorted(SELECTIONS)])
        raise UserInputError(f"unknown selection {name!r}; known: {known}")
    if lo is not None or hi is not None:
        raise UserInputError(f"--lo/--hi apply only to keep_quantile_band, not {name}")
    return SELECTIONS[name]


@dataclass(frozen=True)
class SelectionOutcome:
    """What a selection kept: the thresholds on the statistic and the kept query ids (sorted)."""

    rule: str
    lo_quantile: float
    hi_quantile: float
    lo_threshold: float
    hi_threshold: float
    n_with_value: int
    n_without_value: int
    n_kept: int
    kept: tuple[str, ...]


def select_band(values: Mapping[str, float], band: QuantileBand) -> SelectionOutcome:
    """Apply ``band`` to ``{query_id: value}``; queries whose value is missing or NaN are never kept."""
    finite = {q: float(v) for q, v in values.items() if v is not None and math.isfinite(float(v))}
    if not finite:
        raise UserInputError(f"no query has a finite value to select on with {band.name}",
                             fix="check the statistics file and the column")
    arr = np.asarray(list(finite.values()), dtype=np.float64)
    v_lo, v_hi = (float(x) for x in np.quantile(arr, [band.lo, band.hi]))
    if band.lo == 0.0:
        kept = [q for q, v in finite.items() if v <= v_hi]
    else:
        kept = [q for q, v in finite.items() if v_lo < v <= v_hi]
    return SelectionOutcome(band.name, band.lo, band.hi, v_lo, v_hi, len(finite), len(values) - len(finite),
                            len(kept), tuple(sorted(kept)))


def sidecar_path(path: str | Path) -> Path:
    """``<path>.meta.json``: where an output's description is written."""
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


DEFAULT_COLUMN_PATTERN = re.compile(r"^softmax_entropy_norm_T[0-9.e+-]+_with_pos$")


def default_column(stats_path: str | Path) -> str:
    """The statistic selections use by default: the file's one ``softmax_entropy_norm_T<tau>_with_pos`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = require_file(stats_path, "statistics file", fix="create it with `rankdistill diagnose`")
    try:
        names = pq.read_schema(p).names
    except (OSError, pa.ArrowException) as e:
        raise UserInputError(f"not a parquet file ({e})", path=p) from None
    found = [c for c in names if DEFAULT_COLUMN_PATTERN.match(c)]
    if len(found) != 1:
        raise UserInputError(f"no single normalised-entropy column to select on (found {found or 'none'})", path=p,
                             fix="name the statistic with --by")
    return found[0]


def read_statistic(stats_path: str | Path, column: str) -> dict[str, float]:
    """``{query_id: value}`` of one column of a ``diagnose`` parquet file."""
    import pandas as pd
    import pyarrow as pa

    p = require_file(stats_path, "statistics file", fix="create it with `rankdistill diagnose`")
    try:
        frame = pd.read_parquet(p)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise UserInputError(f"not a parquet file ({e})", path=p) from None
    if "query_id" not in frame.columns:
        raise UserInputError("no query_id column", path=p, fix="give the parquet file of `rankdistill diagnose`")
    if column not in frame.columns:
        numeric = [c for c in frame.columns if c != "query_id" and frame[c].dtype.kind in "fiu"]
        raise UserInputError(f"no column {column!r}; numeric columns: {', '.join(numeric)}", path=p)
    return dict(zip(frame["query_id"].astype(str), frame[column].astype(float), strict=True))


def select_groups(groups_path: str | Path, stats_path: str | Path, column: str, band: QuantileBand,
                  output: str | Path) -> dict:
    """Write the groups whose ``column`` value lies in ``band`` to ``output`` plus ``<output>.meta.json``.

    Thresholds are quantiles over the queries of the groups file that have a finite value (groups skipped
    by ``diagnose`` have none and are dropped, and counted). Returns the sidecar's content.
    """
    groups = read_groups(groups_path, unique=True)
    if not groups:
        raise UserInputError("the groups file is empty", path=groups_path)
    values = read_statistic(stats_path, column)
    group_values = {g.query_id: values.get(g.query_id, math.nan) for g in groups}
    outcome = select_band(group_values, band)
    keep = set(outcome.kept)
    kept_groups = [g for g in groups if g.query_id in keep]
    meta = {
        "groups": str(groups_path),
        "statistics": str(stats_path),
        "column": column,
        "rule": band.name,
        "description": band.description,
        "n_queries": len(groups),
        "n_kept": len(kept_groups),
        "n_dropped": len(groups) - len(kept_groups),
        "n_without_value": outcome.n_without_value,
        "thresholds": {"lo_quantile": outcome.lo_quantile, "hi_quantile": outcome.hi_quantile,
                       "lo_value": outcome.lo_threshold, "hi_value": outcome.hi_threshold,
                       "lower_edge_inclusive": outcome.lo_quantile == 0.0},
    }
    write_groups(kept_groups, output)
    with atomic_write(sidecar_path(output)) as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
        fh.write("\n")
    logger.info("kept %d of %d queries (%s on %s)", len(kept_groups), len(groups), band.name, column)
    return meta


__all__ = [
    "DEFAULT_COLUMN_PATTERN",
    "SELECTIONS",
    "QuantileBand",
    "SelectionOutcome",
    "default_column",
    "drop_lower_quartile",
    "drop_upper_quartile",
    "get_selection",
    "keep_above_median",
    "keep_below_median",
    "keep_interquartile",
    "keep_lower_quartile",
    "keep_quantile_band",
    "keep_second_quartile",
    "keep_third_quartile",
    "keep_upper_quartile",
    "read_statistic",
    "register_selection",
    "select_band",
    "select_groups",
    "sidecar_path",
]
