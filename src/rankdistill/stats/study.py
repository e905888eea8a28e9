"""A study: many systems, several test collections and several seeds, summarised and meta-analysed.

Input is a manifest, a TSV file with a header naming its columns::

    path                    strategy  loss  collection  seed  cost
    runs/bm25-kl-s0.tsv     bm25      kl    scifact     0     12.5

``path`` (a per-query file of ``evaluate --per-query``, relative to the manifest) is required; the system
is named by ``system`` or by ``strategy`` and ``loss`` (``strategy/loss``); ``collection`` defaults to
``default``, ``seed`` to ``0``; ``cost`` (any unit, e.g. GPU hours or teacher calls) is optional and feeds
the cost-vs-effectiveness plot.

Per collection, each system's per-query values are averaged over its seeds and the systems are compared with
:func:`~rankdistill.stats.compare.compare_systems` (tests, TOST, letters). Across seeds, each system's mean
gets a Student-t interval over the per-seed means; across collections, the mean of the collection means
gets a t interval over collections, and the per-collection differences to the baseline are combined by a
random-effects meta-analysis (:mod:`.meta`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rankdistill.errors import UserInputError
from rankdistill.io import iter_lines
from rankdistill.stats.compare import ComparisonConfig, ComparisonReport, check_degenerate, compare_systems
from rankdistill.stats.meta import MeanInterval, MetaAnalysis, mean_interval, random_effects
from rankdistill.stats.perquery import SystemScores, align, load_per_query
from rankdistill.stats.tost import paired_tost

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "system", "strategy", "loss", "collection", "seed", "cost")


@dataclass(frozen=True)
class StudyEntry:
    """One per-query file of a study: which system, collection and seed it belongs to."""

    path: Path
    system: str
    collection: str = "default"
    seed: int = 0
    strategy: str | None = None
    loss: str | None = None
    cost: float | None = None


def read_manifest(path: str | Path) -> list[StudyEntry]:
    """Read a study manifest (see the module docstring); errors name the file and line."""
    p = Path(path)
    rows = [(n, line) for n, line in iter_lines(p) if line.strip()]
    if not rows:
        raise UserInputError("the manifest is empty", path=p)
    header_line, header_text = rows[0]
    header = next(csv.reader([header_text], delimiter="\t"))
    unknown = [c for c in header if c not in MANIFEST_COLUMNS]
    if unknown or "path" not in header:
        raise UserInputError(f"bad header {header}", path=p, line=header_line,
                             fix=f"tab-separated columns among {', '.join(MANIFEST_COLUMNS)}, 'path' required")
    if "system" not in header and not {"strategy", "loss"} <= set(header):
        raise UserInputError("the manifest names no system", path=p, line=header_line,
                             fix="add a 'system' column, or 'strategy' and 'loss' columns")
    entries = []
    seen: dict[tuple[str, str, int], int] = {}
    for n, text in rows[1:]:
        values = next(csv.reader([text], delimiter="\t"))
        if len(values) != len(header):
            raise UserInputError(f"expected {len(header)} tab-separated fields, found {len(values)}", path=p, line=n,
                                 fix="give every row a value (empty allowed) for each header column")
        rec = dict(zip(header, (v.strip() for v in values), strict=True))
        file = Path(rec["path"])
        if not file.is_absolute():
            file = p.parent / file
        if not file.is_file():
            raise UserInputError(f"per-query file {rec['path']!r} not found", path=p, line=n,
                                 fix="paths are relative to the manifest")
        strategy, loss = rec.get("strategy") or None, rec.get("loss") or None
        if not rec.get("system") and not (strategy and loss):
            raise UserInputError("a row needs a system name, or a strategy and a loss (it would be system "
                                 f"'{strategy}/{loss}')", path=p, line=n, fix="fill the system column, or both "
                                 "strategy and loss")
        system = rec.get("system") or f"{strategy}/{loss}"
        try:
            seed = int(rec.get("seed") or 0)
            cost = float(rec["cost"]) if rec.get("cost") else None
        except ValueError:
            raise UserInputError(f"seed must be an integer and cost a number: {rec}", path=p, line=n,
                                 fix="e.g. seed 0 and cost 12.5, or leave them empty") from None
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise UserInputError(f"cost must be a finite number >= 0, got {cost}", path=p, line=n,
                                 fix="give the system's cost (e.g. GPU-seconds), or leave it empty")
        entry = StudyEntry(file, system, rec.get("collection") or "default", seed, strategy, loss, cost)
        key = (entry.system, entry.collection, entry.seed)
        if key in seen:
            raise UserInputError(f"system {entry.system}, collection {entry.collection}, seed {entry.seed} already "
                                 f"given on line {seen[key]}", path=p, line=n, fix="give each seed once")
        seen[key] = n
        entries.append(entry)
    if not entries:
        raise UserInputError("the manifest lists no per-query files", path=p)
    return entries


@dataclass(frozen=True)
class CollectionResult:
    """One collection: the comparison on seed-averaged values, each system's interval over seeds, and the
    seed-averaged per-query values themselves (``{system: {query_id: value}}``, for contrasts of several
    systems)."""

    collection: str
    report: ComparisonReport
    over_seeds: dict[str, MeanInterval]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    seeds: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    """Each system's per-query values seed by seed (``{system: {seed: {query_id: value}}}``)."""
    query_ids: tuple[str, ...] = ()
    """The queries the comparison is on (after the missing-query policy)."""

    def _seed_pairs(self):
        """``(system, seed, its per-query values, the baseline's)`` for each row's seeds that the baseline has
        too, on the queries of the comparison (a query a seed lacks counts 0, as in :func:`_over_seeds`)."""
        base = self.seeds.get(self.report.baseline, {})
        for row in self.report.rows:
            mine = self.seeds.get(row.name, {})
            for seed in sorted(set(mine) & set(base)):
                yield (row.name, seed, [mine[seed].get(q, 0.0) for q in self.query_ids],
                       [base[seed].get(q, 0.0) for q in self.query_ids])

    def verdicts_by_seed(self) -> dict[str, dict[int, str]]:
        """The TOST verdict of each system against the baseline within each seed alone (``{system: {seed:
        verdict}}``, for the seeds both have), with the comparison's margin and alpha.

        The comparison itself is on per-query values averaged over seeds, and its interval is over queries: it
        does not see how much a system's training varies between seeds. A verdict that every seed gives on its
        own is one that the variation between seeds did not make; one that some seed contradicts rests on the
        average of seeds that disagree. Each seed pairs a system with the baseline's run of the same seed, on
        the queries of the comparison (a query a seed lacks counts 0, as in :func:`_over_seeds`), with the
        comparison's margin as resolved on the seed average (a relative margin is not resolved again per seed:
        every seed tests the one hypothesis)."""
        out: dict[str, dict[int, str]] = {row.name: {} for row in self.report.rows}
        for name, seed, mine, base in self._seed_pairs():
            out[name][seed] = paired_tost(mine, base, self.report.margin.value, self.report.config.alpha).verdict
        return out

    def diffs_by_seed(self) -> dict[str, dict[int, float]]:
        """Each system's mean difference from the baseline within each seed alone, ``{system: {seed:
        mean_q (x_s(q) - b_s(q))}}`` over the comparison's queries, pairing the runs of one seed as
        :meth:`verdicts_by_seed` does. Their mean over the seeds both have is the comparison's mean difference
        when every seed has every query; their signs say whether a difference holds seed by seed."""
        out: dict[str, dict[int, float]] = {row.name: {} for row in self.report.rows}
        for name, seed, mine, base in self._seed_pairs():
            out[name][seed] = float(np.mean(np.subtract(mine, base))) if mine else math.nan
        return out


@dataclass(frozen=True)
class StudyReport:
    """The whole study: per collection, across collections, and the meta-analysis of differences."""

    metric: str
    baseline: str
    systems: tuple[str, ...]
    collections: dict[str, CollectionResult]
    over_collections: dict[str, MeanInterval]
    meta: dict[str, MetaAnalysis | None]
    entries: tuple[StudyEntry, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        from rankdistill.stats.compare import json_ready

        def mi(m: MeanInterval) -> dict:
            return {"mean": m.mean, "low": m.low, "high": m.high, "sd": m.sd, "n": m.n, "confidence": m.confidence}

        multi = len({e.seed for e in self.entries}) > 1
        return json_ready({
            "metric": self.metric,
            "baseline": self.baseline,
            "systems": list(self.systems),
            "collections": {c: {"comparison": r.report.to_dict(),
                                "over_seeds": {s: mi(m) for s, m in r.over_seeds.items()},
                                **({"verdicts_by_seed": r.verdicts_by_seed(),
                                    "diffs_by_seed": r.diffs_by_seed()} if multi else {})}
                            for c, r in self.collections.items()},
            "over_collections": {s: mi(m) for s, m in self.over_collections.items()},
            "meta_analysis": {s: None if m is None else {
                "estimate": m.estimate, "se": m.se, "ci_low": m.ci_low, "ci_high": m.ci_high,
                "confidence": m.confidence, "tau2": m.tau2, "i2": m.i2, "q": m.q, "q_pvalue": m.q_pvalue,
                "k": m.k, "method": m.method, "collections": list(m.labels), "effects": list(m.effects),
                "variances": list(m.variances), "weights": list(m.weights)} for s, m in self.meta.items()},
            "notes": list(self.notes),
        })

    def to_text(self) -> str:
        out = []
        for c, r in self.collections.items():
            out.append(f"== {c} ==")
            out.append(r.report.to_text())
        seeds = {e.seed for e in self.entries}
        if len(seeds) > 1:
            out.append(f"== {self.metric}: mean over seeds, {_pct(self._confidence())} t interval ==")
            out.append(_interval_table({c: r.over_seeds for c, r in self.collections.items()}, self.systems))
            out.append(f"== TOST against {self.baseline} within each seed alone (mean difference) ==")
            for c, r in self.collections.items():
                diffs = r.diffs_by_seed()
                for system, verdicts in r.verdicts_by_seed().items():
                    out.append(f"{c:<12} {system}  " + ", ".join(f"seed {k}: {v} ({diffs[system][k]:+.4f})"
                                                                 for k, v in verdicts.items()))
            out.append("")
        if len(self.collections) > 1:
            out.append(f"== {self.metric}: mean over collections, {_pct(self._confidence())} t interval ==")
            out.append(_interval_table({"all": self.over_collections}, self.systems))
            out.append(f"== random-effects meta-analysis of the difference to {self.baseline} across collections ==")
            width = max(len(s) for s in self.systems)
            for s, m in self.meta.items():
                if m is None:
                    out.append(f"{s:<{width}}  (not estimable: constant differences in some collection)")
                else:
                    out.append(f"{s:<{width}}  {m.estimate:+.4f}  [{m.ci_low:+.4f}, {m.ci_high:+.4f}]  "
                               f"tau2 {m.tau2:.2e}  I2 {100 * m.i2:.0f}%  Q p {m.q_pvalue:.3f}  ({m.method}, k={m.k})")
            out.append("")
        out.extend(self.notes)
        return "\n".join(out).rstrip("\n") + "\n"

    def _confidence(self) -> float:
        for r in self.collections.values():
            return r.report.config.confidence
        return 0.95


def _pct(c: float) -> str:
    return f"{100 * c:g}%"


def _interval_table(groups: dict[str, dict[str, MeanInterval]], systems: Sequence[str]) -> str:
    width = max(len(s) for s in systems)
    lines = []
    for g, intervals in groups.items():
        for s in systems:
            if s not in intervals:
                continue
            m = intervals[s]
            ci = "" if math.isnan(m.low) else f"[{m.low:.4f}, {m.high:.4f}]"
            lines.append(f"{g:<12} {s:<{width}}  {m.mean:.4f}  {ci}  n={m.n}")
    return "\n".join(lines) + "\n"


def _seed_average(entries: Sequence[StudyEntry], metric: str, policy: str
                  ) -> tuple[SystemScores, list[dict[str, float]]]:
    """A system's per-query values averaged over its seeds (aligned across seeds under ``policy``), and each
    seed's own per-query values."""
    systems, _ = load_per_query([e.path for e in entries], metric, names=[f"seed {e.seed}" for e in entries])
    per_seed = [dict(s.values) for s in systems]
    if len(systems) == 1:
        s = systems[0]
        return SystemScores(entries[0].system, s.values, s.source), per_seed
    al = align(systems, policy)
    values = dict(zip(al.query_ids, al.matrix.mean(axis=0).tolist(), strict=True))
    return SystemScores(entries[0].system, values, str(entries[0].path)), per_seed


def _over_seeds(per_seed: Sequence[dict[str, float]], query_ids: Sequence[str], confidence: float) -> MeanInterval:
    """Mean and interval over seeds of each seed's mean on ``query_ids``: the queries the comparison of the
    collection uses (a query a seed lacks counts 0, as under the ``zero`` policy; under ``drop`` every seed
    has them all). Tables beside a comparison then show the means it compared."""
    means = [float(np.mean([seed.get(q, 0.0) for q in query_ids])) for seed in per_seed]
    return mean_interval(means, confidence)


def run_study(entries: Sequence[StudyEntry], config: ComparisonConfig, *, missing: str = "drop",
              meta_method: str = "dl", strict: bool = True) -> StudyReport:
    """Compare the systems of a study per collection, over seeds, and across collections.

    ``strict=False`` turns constant or identical systems into notes instead of errors (see
    :func:`~rankdistill.stats.compare.check_degenerate`)."""
    systems = tuple(dict.fromkeys(e.system for e in entries))
    baseline = config.baseline if config.baseline is not None else systems[0]
    if baseline not in systems:
        raise UserInputError(f"baseline {baseline!r} is not in the manifest; systems: {', '.join(systems)}")
    config = replace(config, baseline=baseline)
    collections = tuple(dict.fromkeys(e.collection for e in entries))
    results: dict[str, CollectionResult] = {}
    notes: list[str] = []
    for c in collections:
        per_system = {s: [e for e in entries if e.collection == c and e.system == s] for s in systems}
        absent = [s for s, es in per_system.items() if not es]
        if baseline in absent:
            raise UserInputError(f"the baseline {baseline} has no per-query file for collection {c}")
        if absent:
            notes.append(f"{c}: no results for {', '.join(absent)}")
        averaged, seeds, by_seed = [], {}, {}
        for s, es in per_system.items():
            if es:
                ordered = sorted(es, key=lambda e: e.seed)
                scores, seeds[s] = _seed_average(ordered, config.metric, missing)
                by_seed[s] = {e.seed: values for e, values in zip(ordered, seeds[s], strict=True)}
                averaged.append(scores)
        alignment = align(averaged, missing)
        over_seeds = {s: _over_seeds(per_seed, alignment.query_ids, config.confidence)
                      for s, per_seed in seeds.items()}
        notes += [f"{c}: {note}" for note in check_degenerate(alignment, {s.name: s.source for s in averaged},
                                                              strict=strict)]
        results[c] = CollectionResult(c, compare_systems(alignment, config), over_seeds,
                                      {a.name: dict(a.values) for a in averaged}, by_seed, alignment.query_ids)
    over_collections = {}
    meta: dict[str, MetaAnalysis | None] = {}
    for s in systems:
        means = [r.over_seeds[s].mean for r in results.values() if s in r.over_seeds]
        over_collections[s] = mean_interval(means, config.confidence)
        if s == baseline or len(results) < 2:
            continue
        rows = [(c, row) for c, r in results.items() for row in r.report.rows if row.name == s]
        if len(rows) < 2 or any(row.tost.se == 0 for _, row in rows):
            meta[s] = None
            continue
        meta[s] = random_effects([row.mean_diff for _, row in rows], [row.tost.se ** 2 for _, row in rows],
                                 [c for c, _ in rows], method=meta_method, confidence=config.confidence)
    return StudyReport(config.metric, baseline, systems, results, over_collections, meta, tuple(entries),
                       tuple(notes))


__all__ = ["MANIFEST_COLUMNS", "CollectionResult", "StudyEntry", "StudyReport", "read_manifest", "run_study"]
