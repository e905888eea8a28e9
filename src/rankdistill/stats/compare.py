"""Compare systems on per-query values: paired tests vs a baseline, corrections, bootstrap, TOST, classes.

The Python API behind ``rankdistill compare`` (PyTerrier's ``Experiment(..., baseline=0, test="t",
correction="holm")`` in spirit)::

    systems, metric = load_per_query(["bm25.tsv", "ce.tsv"], metric="nDCG@10")
    report = compare_systems(align(systems), ComparisonConfig(metric=metric, margin=0.01))
    print(report.to_text()); report.to_dict()

For each non-baseline system: the paired t-test and Wilcoxon signed-rank test of the per-query differences
(:mod:`.paired`) with Holm or Benjamini-Hochberg adjustment across the systems (:mod:`.corrections`), a
seeded bootstrap interval of the mean difference (:mod:`.bootstrap`) and a paired TOST with a margin fixed in
advance (:mod:`.tost`). With three or more systems, equivalence classes (:mod:`.equivalence`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rankdistill.errors import UserInputError
from rankdistill.stats.bootstrap import BOOTSTRAP_METHODS, BootstrapInterval, bootstrap_mean_diff
from rankdistill.stats.corrections import CORRECTIONS, adjust_pvalues
from rankdistill.stats.equivalence import EquivalenceClasses, equivalence_classes
from rankdistill.stats.paired import PAIRED_TESTS, PairedTestResult, check_confidence
from rankdistill.stats.perquery import Alignment
from rankdistill.stats.tost import Margin, TostResult, paired_tost, resolve_margin


@dataclass(frozen=True)
class ComparisonConfig:
    """What to compute; validated on construction (bad values raise :class:`UserInputError`)."""

    metric: str
    margin: float | None = None
    margin_rel: float | None = None
    alpha: float = 0.05
    baseline: str | None = None
    correction: str = "holm"
    tests: tuple[str, ...] = ("t", "wilcoxon")
    bootstrap: int = 10_000
    bootstrap_method: str = "BCa"
    confidence: float = 0.95
    seed: int = 0
    classes: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise UserInputError(f"alpha must be in (0, 0.5), got {self.alpha}", fix="e.g. --alpha 0.05")
        if self.correction not in CORRECTIONS:
            raise UserInputError(f"unknown correction {self.correction!r}; known: {', '.join(CORRECTIONS)}")
        if isinstance(self.tests, str):  # one name, not its characters
            object.__setattr__(self, "tests", (self.tests,))
        unknown = [t for t in self.tests if t not in PAIRED_TESTS]
        if unknown:
            raise UserInputError(f"unknown test(s) {', '.join(unknown)}; known: {', '.join(PAIRED_TESTS)}")
        if self.bootstrap < 0:
            raise UserInputError(f"--bootstrap must be >= 0 resamples, got {self.bootstrap}")
        if self.seed < 0:
            raise UserInputError(f"--seed must be >= 0, got {self.seed}", fix="e.g. --seed 0")
        check_confidence(self.confidence)
        if self.bootstrap_method not in BOOTSTRAP_METHODS:
            raise UserInputError(f"unknown bootstrap method {self.bootstrap_method!r}; known: "
                                 f"{', '.join(BOOTSTRAP_METHODS)}")
        if self.margin is None and self.margin_rel is None:
            raise UserInputError("no equivalence margin given",
                                 fix="fix one in advance: --margin 0.01 or --margin-rel 0.02")
        resolve_margin(self.margin, self.margin_rel, 1.0)  # validates sign and exclusivity


@dataclass(frozen=True)
class SystemComparison:
    """One system against the baseline."""

    name: str
    n: int
    mean: float
    mean_diff: float
    tests: dict[str, PairedTestResult]
    adjusted: dict[str, float]
    bootstrap: BootstrapInterval | None
    tost: TostResult


@dataclass(frozen=True)
class ComparisonReport:
    """Everything ``compare`` reports, with :meth:`to_dict` (JSON) and :meth:`to_text` (people)."""

    config: ComparisonConfig
    metric: str
    baseline: str
    baseline_mean: float
    margin: Margin
    n_queries: int
    missing: dict[str, tuple[str, ...]]
    missing_policy: str
    means: dict[str, float]
    rows: tuple[SystemComparison, ...]
    classes: EquivalenceClasses | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN/inf become ``None``)."""
        out = {
            "metric": self.metric,
            "baseline": self.baseline,
            "baseline_mean": self.baseline_mean,
            "n_queries": self.n_queries,
            "missing_queries": {k: list(v) for k, v in self.missing.items()},
            "missing_policy": self.missing_policy,
            "alpha": self.config.alpha,
            "correction": self.config.correction,
            "margin": {"value": self.margin.value, "kind": self.margin.kind, "spec": self.margin.spec},
            "tost_interval_level": 1 - 2 * self.config.alpha,
            "means": self.means,
            "systems": [],
            "notes": list(self.notes),
        }
        for r in self.rows:
            row = {"name": r.name, "n": r.n, "mean": r.mean, "mean_diff": r.mean_diff,
                   "tests": {k: {"statistic": v.statistic, "pvalue": v.pvalue, "pvalue_adjusted": r.adjusted[k]}
                             for k, v in r.tests.items()},
                   "bootstrap": None if r.bootstrap is None else {
                       "low": r.bootstrap.low, "high": r.bootstrap.high, "confidence": r.bootstrap.confidence,
                       "n_resamples": r.bootstrap.n_resamples, "method": r.bootstrap.method,
                       "seed": r.bootstrap.seed},
                   "tost": {**asdict(r.tost), "p_tost": r.tost.p_tost, "ci_level": r.tost.ci_level}}
            out["systems"].append(row)
        if self.classes is not None:
            out["equivalence_classes"] = {
                "letters": self.classes.letters,
                "classes": [list(c) for c in self.classes.classes],
                "order": list(self.classes.systems),
                "caveat": self.classes.caveat,
                "pairwise": [{"a": a, "b": b, "verdict": t.verdict, "mean_diff": t.mean_diff, "ci_low": t.ci_low,
                              "ci_high": t.ci_high, "p_tost": t.p_tost}
                             for (a, b), t in self.classes.pairwise.items()],
            }
        return json_ready(out)

    def to_text(self) -> str:
        """An aligned table for people, then the settings and caveats."""
        c = self.config
        level = f"{100 * (1 - 2 * c.alpha):g}%"
        head = ["system", "n", self.metric, "diff"]
        if c.bootstrap:
            head.append(f"{100 * c.confidence:g}% boot CI")
        for t in c.tests:
            head += [f"p({t})", f"p_{c.correction}({t})"]
        head += [f"TOST {level} CI", "p_TOST", "verdict"]
        if self.classes is not None:
            head.append("class")
        body = []
        letters = self.classes.letters if self.classes is not None else {}
        base_row = [f"{self.baseline} (baseline)", str(self.n_queries), f"{self.baseline_mean:.4f}", ""]
        base_row += [""] * (len(head) - len(base_row))
        if self.classes is not None:
            base_row[-1] = letters.get(self.baseline, "")
        body.append(base_row)
        for r in self.rows:
            row = [r.name, str(r.n), f"{r.mean:.4f}", f"{r.mean_diff:+.4f}"]
            if c.bootstrap:
                b = r.bootstrap
                row.append("" if b is None else f"[{b.low:+.4f}, {b.high:+.4f}]")
            for t in c.tests:
                row += [_fmt_p(r.tests[t].pvalue), _fmt_p(r.adjusted[t])]
            row += [f"[{r.tost.ci_low:+.4f}, {r.tost.ci_high:+.4f}]", _fmt_p(r.tost.p_tost), r.tost.verdict]
            if self.classes is not None:
                row.append(letters.get(r.name, ""))
            body.append(row)
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(x, widths, strict=True)))
                 for x in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(f"metric {self.metric} on {self.n_queries} queries; diff = system - baseline; alpha {c.alpha:g}; "
                     f"{c.correction} correction across {len(self.rows)} system(s)")
        lines.append(f"TOST margin {self.margin.describe()}, fixed in advance; verdict from the {level} interval: "
                     "equivalent (inside the margin), different (outside), inconclusive (overlaps)")
        for name, qids in self.missing.items():
            lines.append(f"missing: {name} lacks {len(qids)} queries (e.g. {', '.join(qids[:5])}); "
                         f"policy {self.missing_policy}")
        if self.classes is not None:
            lines.append(f"classes: {self.classes.caveat}")
        lines.extend(self.notes)
        return "\n".join(lines) + "\n"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "nan"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def json_ready(obj: object) -> object:
    """``obj`` with dict keys as strings, tuples as lists, numpy numbers as Python ones and NaN/inf as ``None``."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def check_degenerate(alignment: Alignment, sources: dict[str, str] | None = None, strict: bool = True
                     ) -> list[str]:
    """Refuse per-query values that make the tests meaningless: constant values, identical systems.

    With ``strict=False`` (a study's own cells, where two models can legitimately rank alike) those two cases
    are returned as notes instead; fewer than two common queries is always an error. The tests themselves
    handle zero-variance differences (the interval is the point).
    """
    sources = sources or {}
    if len(alignment.query_ids) < 2:
        raise UserInputError(f"only {len(alignment.query_ids)} query in common; paired tests need at least 2",
                             fix="check that the runs were evaluated on the same dataset and split")
    problems: list[tuple[str, str | None, str]] = []
    for i, name in enumerate(alignment.names):
        row = alignment.matrix[i]
        if np.all(row == row[0]):
            problems.append((f"system {name} has the same {row[0]:g} on all {row.size} queries",
                             sources.get(name), "the run is probably empty or broken; re-run it"))
    for i in range(len(alignment.names)):
        for j in range(i + 1, len(alignment.names)):
            if np.array_equal(alignment.matrix[i], alignment.matrix[j]):
                a, b = alignment.names[i], alignment.names[j]
                problems.append((f"systems {a} and {b} have identical values on every query", sources.get(b),
                                 "was the same run given twice?"))
    if problems and strict:
        message, path, fix = problems[0]
        raise UserInputError(message, path=path, fix=fix)
    return [message for message, _, _ in problems]


def compare_systems(alignment: Alignment, config: ComparisonConfig) -> ComparisonReport:
    """Run every test of ``config`` on aligned per-query values; the baseline is named or the first system."""
    names = list(alignment.names)
    if len(names) < 2:
        raise UserInputError("compare needs at least two per-query files (a baseline and a system)")
    baseline = config.baseline if config.baseline is not None else names[0]
    if baseline not in names:
        raise UserInputError(f"baseline {baseline!r} is not one of the systems: {', '.join(names)}",
                             fix="name it as listed, or leave --baseline out to use the first file")
    base = alignment.values(baseline)
    base_mean = float(np.mean(base))
    margin = resolve_margin(config.margin, config.margin_rel, base_mean)
    others = [n for n in names if n != baseline]
    tests = {n: {t: PAIRED_TESTS[t](alignment.values(n), base) for t in config.tests} for n in others}
    adjusted = {t: adjust_pvalues([tests[n][t].pvalue for n in others], config.correction) for t in config.tests}
    rows = []
    for i, n in enumerate(others):
        x = alignment.values(n)
        boot = bootstrap_mean_diff(x, base, confidence=config.confidence, n_resamples=config.bootstrap,
                                   seed=config.seed, method=config.bootstrap_method) if config.bootstrap else None
        rows.append(SystemComparison(n, x.size, float(np.mean(x)), float(np.mean(x - base)), tests[n],
                                     {t: float(adjusted[t][i]) for t in config.tests}, boot,
                                     paired_tost(x, base, margin.value, config.alpha)))
    classes = None
    if config.classes and len(names) >= 3:
        classes = equivalence_classes({n: alignment.values(n) for n in names}, margin.value, config.alpha)
    return ComparisonReport(config, config.metric, baseline, base_mean, margin, len(alignment.query_ids),
                            alignment.missing, alignment.policy,
                            {n: float(np.mean(alignment.values(n))) for n in names}, tuple(rows), classes)


__all__ = ["ComparisonConfig", "ComparisonReport", "SystemComparison", "check_degenerate", "compare_systems",
           "json_ready"]
