"""``rankdistill compare``: paired tests, TOST equivalence and classes over per-query files.

Two modes:

- ``--per-query a.tsv b.tsv ...``: systems on one collection (the first file, or ``--baseline``, is the
  baseline);
- ``--manifest study.tsv``: many systems x collections x seeds (see :mod:`rankdistill.stats.study`), with
  means and intervals over seeds and collections, a random-effects meta-analysis across collections, and
  result tables (``--table-md``, ``--table-latex``).

Prints an aligned table (or ``--json``: one JSON object) on stdout; ``--plot-dir`` writes figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rankdistill.commands.common import declare_outputs
from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write
from rankdistill.stats.compare import ComparisonConfig, check_degenerate, compare_systems
from rankdistill.stats.corrections import CORRECTIONS
from rankdistill.stats.paired import PAIRED_TESTS
from rankdistill.stats.perquery import MISSING_POLICIES, align, load_per_query

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("compare", help="paired tests and TOST equivalence between systems",
                       description="Compare systems on per-query values (from `evaluate --per-query`): paired t and "
                                   "Wilcoxon tests against a baseline with Holm/BH correction, bootstrap intervals, "
                                   "paired TOST with a margin fixed in advance, equivalence classes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--per-query", nargs="+", metavar="TSV", help="per-query files, one per system")
    src.add_argument("--manifest", metavar="TSV",
                     help="study manifest: path, system (or strategy + loss), collection, seed, cost columns")
    p.add_argument("--metric", default=None, metavar="M",
                   help="measure to compare, e.g. nDCG@10 (default: the one measure all files share)")
    p.add_argument("--margin", type=float, default=None,
                   help="equivalence margin in metric units, e.g. 0.01 (this or --margin-rel is required)")
    p.add_argument("--margin-rel", type=float, default=None, metavar="FRACTION",
                   help="equivalence margin as a fraction of the baseline mean, e.g. 0.02 (or --margin)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="test level; TOST reports the (1-2 alpha) interval (default 0.05)")
    p.add_argument("--names", nargs="+", default=None, metavar="NAME", help="system names, one per --per-query file")
    p.add_argument("--baseline", default=None, metavar="NAME", help="baseline system (default: the first)")
    p.add_argument("--correction", choices=tuple(CORRECTIONS), default="holm",
                   help="multiple-testing correction across systems (default holm)")
    p.add_argument("--tests", nargs="+", choices=tuple(PAIRED_TESTS), default=["t", "wilcoxon"],
                   help="paired tests against the baseline (default: t wilcoxon)")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="B",
                   help="bootstrap resamples for the interval of the mean difference (0: none; default 10000)")
    p.add_argument("--bootstrap-method", choices=("BCa", "percentile"), default="BCa",
                   help="bootstrap interval: bias-corrected and accelerated (default) or percentile")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="level of the bootstrap and seed intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--missing", choices=MISSING_POLICIES, default="drop",
                   help="queries missing from some system: drop them (reported; default), score them 0, or refuse")
    p.add_argument("--no-classes", action="store_true", help="skip the pairwise equivalence classes")
    p.add_argument("--meta-method", choices=("dl", "pm"), default="dl",
                   help="random-effects estimator across collections: DerSimonian-Laird (default) or Paule-Mandel")
    p.add_argument("--table-md", metavar="FILE", help="(manifest) write a Markdown results table")
    p.add_argument("--table-latex", metavar="FILE", help="(manifest) write a LaTeX results table")
    p.add_argument("--table-metrics", nargs="+", metavar="M", default=None,
                   help="(manifest) metrics for the table columns (default: --metric)")
    p.add_argument("--plot-dir", metavar="DIR",
                   help="write figures (PNG+SVG): TOST forest plot; cost vs effectiveness when the manifest has "
                        "costs; entropy vs gain with --diagnostics")
    p.add_argument("--diagnostics", metavar="PARQUET",
                   help="`rankdistill diagnose` output of the evaluated queries, for the entropy-vs-gain plot")
    p.add_argument("--entropy-column", default="softmax_entropy_nats_T1_with_pos", metavar="COL",
                   help="diagnostics column on the x axis of the entropy-vs-gain plot (default %(default)s)")
    p.add_argument("--output", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text table")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("per_query", "manifest", "diagnostics"), table_md="file", table_latex="file",
                    plot_dir="folder", output="file")


def _config(args: argparse.Namespace, metric: str) -> ComparisonConfig:
    return ComparisonConfig(metric=metric, margin=args.margin, margin_rel=args.margin_rel, alpha=args.alpha,
                            baseline=args.baseline, correction=args.correction, tests=tuple(args.tests),
                            bootstrap=args.bootstrap, bootstrap_method=args.bootstrap_method,
                            confidence=args.confidence, seed=args.seed, classes=not args.no_classes)


def _validate(args: argparse.Namespace) -> None:
    if args.margin is None and args.margin_rel is None:
        raise UserInputError("no equivalence margin given",
                             fix="fix one in advance: --margin 0.01 or --margin-rel 0.02")
    if args.margin is not None and args.margin_rel is not None:
        raise UserInputError("--margin and --margin-rel both given", fix="give one of them")
    if args.per_query and (args.table_md or args.table_latex or args.table_metrics):
        raise UserInputError("result tables need a study", fix="use --manifest with --table-md/--table-latex")
    if args.names and not args.per_query:
        raise UserInputError("--names applies to --per-query files", fix="name systems in the manifest instead")
    if args.diagnostics and not (args.plot_dir and args.per_query):
        raise UserInputError("--diagnostics feeds the entropy-vs-gain plot of a --per-query comparison",
                             fix="use it with --per-query and --plot-dir DIR")
    # the stats layer validates the rest; surface it before reading any file
    _config(args, args.metric or "")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    if args.manifest:
        return _run_study(args)
    systems, metric = load_per_query(args.per_query, args.metric, args.names)
    if len(systems) < 2:
        raise UserInputError("compare needs at least two per-query files", fix="give a baseline and a system")
    alignment = align(systems, args.missing)
    check_degenerate(alignment, {s.name: s.source for s in systems})
    report = compare_systems(alignment, _config(args, metric))
    payload = report.to_dict()
    if args.plot_dir:
        payload["plots"] = _plots_single(args, report, alignment)
    _emit(args, payload, report.to_text())
    return 0


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    if args.output:
        with atomic_write(args.output) as fh:
            json.dump(payload, fh, indent=2, sort_keys=False)
            fh.write("\n")
    if args.json:
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        sys.stdout.write(text)


def _plots_single(args: argparse.Namespace, report, alignment) -> list[str]:
    from rankdistill.reports.plots import plot_entropy_vs_gain, plot_tost_forest

    out = Path(args.plot_dir)
    written = plot_tost_forest([(r.name, r.tost) for r in report.rows], out / "tost_forest",
                               xlabel=f"{report.metric} difference to {report.baseline}")
    if args.diagnostics:
        from rankdistill.diagnostics.selections import read_statistic

        entropy = read_statistic(args.diagnostics, args.entropy_column)
        base = dict(zip(alignment.query_ids, alignment.values(report.baseline), strict=True))
        for r in report.rows:
            gain = {q: float(v) - base[q]
                    for q, v in zip(alignment.query_ids, alignment.values(r.name), strict=True)}
            if not set(gain) & set(entropy):
                raise UserInputError("no evaluated query has diagnostics", path=args.diagnostics,
                                     fix="diagnose groups of the evaluated queries (same query ids)")
            paths, corr = plot_entropy_vs_gain(entropy, gain, out / f"entropy_vs_gain_{_slug(r.name)}",
                                               xlabel=args.entropy_column,
                                               ylabel=f"{report.metric}: {r.name} - {report.baseline}")
            logger.info("%s: Spearman rho(entropy, gain) = %.3f over %d queries", r.name, corr.rho, corr.n)
            written += paths
    return [str(p) for p in written]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def _run_study(args: argparse.Namespace) -> int:
    from rankdistill.stats.study import read_manifest, run_study

    entries = read_manifest(args.manifest)
    metric = args.metric
    if metric is None:
        _, metric = load_per_query([e.path for e in entries], None, [str(i) for i in range(len(entries))])
    report = run_study(entries, _config(args, metric), missing=args.missing, meta_method=args.meta_method)
    payload = report.to_dict()
    if args.table_md or args.table_latex:
        from rankdistill.reports.tables import table_from_studies, to_latex, to_markdown

        studies = [report if m == metric else
                   run_study(entries, _config(args, m), missing=args.missing, meta_method=args.meta_method)
                   for m in (args.table_metrics or [metric])]
        table = table_from_studies(studies)
        if args.table_md:
            with atomic_write(args.table_md) as fh:
                fh.write(to_markdown(table))
        if args.table_latex:
            with atomic_write(args.table_latex) as fh:
                fh.write(to_latex(table))
    if args.plot_dir:
        payload["plots"] = _plots_study(args, report)
    _emit(args, payload, report.to_text())
    return 0


def _plots_study(args: argparse.Namespace, report) -> list[str]:
    from rankdistill.reports.plots import CostPoint, plot_cost_vs_effectiveness, plot_tost_forest

    out = Path(args.plot_dir)
    written = []
    for coll, res in report.collections.items():
        if res.report.rows:
            written += plot_tost_forest([(r.name, r.tost) for r in res.report.rows],
                                        out / f"tost_forest_{_slug(coll)}",
                                        xlabel=f"{report.metric} difference to {report.baseline} on {coll}")
    costs: dict[str, list[float]] = {}
    for e in report.entries:
        if e.cost is not None:
            costs.setdefault(e.system, []).append(e.cost)
    if costs:
        points = []
        for s, cs in costs.items():
            m = report.over_collections.get(s)
            if m is not None:
                points.append(CostPoint(s, sum(cs) / len(cs), m.mean, m.low, m.high))
        written += plot_cost_vs_effectiveness(points, out / "cost_vs_effectiveness", xlabel="cost (manifest units)",
                                              ylabel=f"{report.metric} (mean over collections)")
    return [str(p) for p in written]
