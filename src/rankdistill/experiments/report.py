"""The study report: ``OUTPUT/report.md`` and ``report.html`` (plots inline), from the artifacts alone.

Everything in ``report.md`` is a function of the artifacts' contents, never of wall-clock time, so a re-run
(or a killed and resumed run) writes the same bytes. Measured times live in ``OUTPUT/costs.md`` and the
cost-vs-effectiveness plot.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankdistill.errors import UserInputError
from rankdistill.experiments.config import TEACHER_LOSSES
from rankdistill.experiments.shares import fair_shares, peak_overlap
from rankdistill.stats.compare import json_ready

logger = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def write_report(study, mined, scores, diags, groups, refs, cell_arts) -> Path:
    """Compose the report of a finished study; returns the path of ``report.md``."""
    from rankdistill.evaluation import read_per_query
    from rankdistill.experiments.runner import budget_cells, entropy_cells, grid_cells
    from rankdistill.reports import (
        CostPoint,
        plot_cost_vs_effectiveness,
        plot_diameter_per_strategy,
        plot_entropy_histograms,
        plot_tost_forest,
        table_from_studies,
        to_markdown,
    )
    from rankdistill.stats.compare import ComparisonConfig
    from rankdistill.stats.study import StudyEntry, run_study

    cfg = study.cfg
    out_dir: Path = study.output
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    comp = cfg.comparison
    metric = comp.metric
    md: list[str] = [f"# Study report: {cfg.name}", ""]
    if cfg.description:
        md += [cfg.description, ""]
    over = f" with overrides {', '.join(f'`{o}`' for o in cfg.overrides)}" if cfg.overrides else ""
    md += [f"Config: `{Path(cfg.source).name}`{over} (resolved copy: `config.resolved.json`). Training data: "
           f"`{cfg.train.dataset}` split `{cfg.train.split}`"
           + (f" (first {cfg.train.max_queries} queries)" if cfg.train.max_queries else "") + ". "
           f"Grid: strategies {', '.join(cfg.grid.strategies)}; losses {', '.join(cfg.grid.losses)}; "
           f"architectures {', '.join(cfg.grid.archs)}; group sizes {', '.join(map(str, cfg.grid.group_sizes))}; "
           f"selections {', '.join(cfg.grid.selections)}; seeds {', '.join(map(str, cfg.grid.seeds))}. "
           f"Budget: {cfg.student.budget_docs:,} documents per cell "
           f"(optimizer steps x batch x grad accumulation x world size x group size)"
           + (f"; the budget study adds {', '.join(f'{n:,}' for n in cfg.budget_study.budgets)}"
              if cfg.budget_study is not None else "") + ".", ""]
    for note in cfg.notes:
        md += [f"> {note}", ""]

    # ---- reference rows --------------------------------------------------------------------------------
    md += ["## Reference: first stage and teacher", "",
           "first stage: the candidates every re-ranking test starts from (BM25 unless the test names a run; for "
           "a full-retrieval test, BM25 retrieval at the same depth); teacher: the teacher re-ranking them; "
           "untrained bi-encoder: the bi-encoder students' starting model with their settings (layers, pooling, "
           "similarity, token limits), read before any training (re-ranking, or dense retrieval for a "
           "full-retrieval test).", ""]
    plan = _crossfit_plan(study.teacher_folder)
    if plan is not None:
        k = len(plan.members)
        md += [f"The teacher is cross-fitted: {k} members, each trained on the training queries outside one "
               "fold, so each training query's labels, teacher-ranked negatives and entropy come from the member "
               f"that never saw it; its row here is the mean of the {k} members, none of which saw a test "
               "query.", ""]
    ref_rows = []
    for name, per_test in refs.items():
        if not per_test:
            continue
        row = [name]
        for t in cfg.tests:
            if t.name not in per_test:
                row.append("-")
                continue
            pq = read_per_query(per_test[t.name].file("per_query.tsv"))
            row.append(_f(_mean(list(pq.get(metric, {}).values()))))
        ref_rows.append(row)
    md += [_md_table(["system", *[f"{t.name} {metric}" for t in cfg.tests]], ref_rows), ""]

    # ---- studies per (arch, loss, group size, selection) -------------------------------------------------
    studies: dict[tuple, Any] = {}
    entries_by_key: dict[tuple, list] = {}
    band_entries: dict[tuple, list] = {}
    budget_entries: dict[tuple, list] = {}
    es = cfg.entropy_study
    st_budget = cfg.student.budget_docs
    in_grid, in_entropy, in_budget = set(grid_cells(cfg)), set(entropy_cells(cfg)), set(budget_cells(cfg))
    for cell, _train, evals in cell_arts:
        key = (cell.arch, cell.loss, cell.group_size, cell.selection)
        tests = [t for t in cfg.tests if t.name in evals]
        if cell in in_grid:
            for t in tests:
                entries_by_key.setdefault(key, []).append(StudyEntry(
                    path=evals[t.name].file("per_query.tsv"), system=f"{cell.strategy}/{cell.loss}",
                    collection=t.name, seed=cell.seed, strategy=cell.strategy, loss=cell.loss))
        if cell in in_budget:
            docs = cell.budget or st_budget
            for t in tests:
                budget_entries.setdefault((cell.arch, cell.loss, cell.strategy, cell.group_size), []).append((
                    docs, StudyEntry(path=evals[t.name].file("per_query.tsv"), system=_budget_name(docs),
                                     collection=t.name, seed=cell.seed)))
        if cell in in_entropy:
            for t in tests:
                band_entries.setdefault((cell.arch, cell.loss, cell.group_size), []).append(StudyEntry(
                    path=evals[t.name].file("per_query.tsv"), system=cell.selection, collection=t.name,
                    seed=cell.seed))
    ccfg = dict(metric=metric, margin=comp.margin, alpha=comp.alpha, correction=comp.correction,
                bootstrap=2000, seed=0)
    for key, entries in entries_by_key.items():
        baseline = f"{comp.baseline}/{key[1]}"
        studies[key] = run_study(entries, ComparisonConfig(baseline=baseline, **ccfg), strict=False)
    band_studies = {key: run_study(sorted(entries, key=lambda e: (_band_order(es, e.system), e.collection, e.seed)),
                                   ComparisonConfig(baseline="all", **ccfg), strict=False)
                    for key, entries in band_entries.items()}
    budget_studies = {key: run_study([e for _, e in sorted(entries, key=lambda d: (d[0], d[1].collection,
                                                                                   d[1].seed))],
                                     ComparisonConfig(baseline=_budget_name(st_budget), **ccfg), strict=False)
                      for key, entries in budget_entries.items()
                      if len({docs for docs, _ in entries}) > 1}

    md += ["## Main results", "",
           f"Mean {metric} over seeds; best per column in bold; superscript letters are equivalence classes "
           f"(paired TOST, margin {comp.margin:g}, alpha {comp.alpha:g}) among the strategies of the same loss "
           "and architecture. Equivalence is not transitive: two systems sharing a letter with a third need not "
           "be equivalent to each other.", ""]
    for arch in cfg.grid.archs:
        for gs in cfg.grid.group_sizes:
            for sel in cfg.grid.selections:
                keys = [k for k in studies if k[0] == arch and k[2] == gs and k[3] == sel]
                if not keys:
                    continue
                title = f"### {arch}-encoder students, group size {gs}" + ("" if sel == "all" else f", {sel}")
                table = table_from_studies([studies[k] for k in keys])
                md += [title, "", to_markdown(table), ""]

    # ---- TOST against the baseline ----------------------------------------------------------------------
    md += [f"## Equivalence to the {comp.baseline} baseline", "",
           f"Paired TOST per test collection on per-query {metric} (averaged over seeds), margin "
           f"+-{comp.margin:g} fixed before the run, alpha {comp.alpha:g}; the interval is the "
           f"{100 * (1 - 2 * comp.alpha):g}% confidence interval of the mean difference.", ""]
    tost_rows, forest = [], []
    seeds = sorted(cfg.grid.seeds)
    by_seed = _verdicts_by_seed(studies) if len(seeds) > 1 else {}
    for key, st in studies.items():
        arch, loss, gs, sel = key
        for coll, res in st.collections.items():
            for row in res.report.rows:
                t = row.tost
                tost_rows.append([arch, loss, row.name.split("/")[0], coll, f"{row.mean_diff:+.4f}",
                                  f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]", f"{t.p_lower:.3g}", f"{t.p_upper:.3g}",
                                  t.verdict])
                if by_seed:
                    per = by_seed[(key, coll, row.name)]
                    tost_rows[-1].append(" ".join(per[seed][0] if seed in per else "-" for seed in seeds))
                forest.append((f"{arch}/{loss}/{row.name.split('/')[0]} @ {coll}", t))
    if tost_rows:
        header = ["arch", "loss", "strategy", "collection", "mean diff", "interval", "p lower", "p upper", "verdict"]
        if by_seed:
            header.append(f"seed by seed ({', '.join(map(str, seeds))})")
            md += ["The last column is the verdict of the same test within each seed alone (e equivalent, d "
                   "different, i inconclusive; see \"Spread over seeds\").", ""]
        md += [_md_table(header, tost_rows), ""]
        plot_tost_forest(forest, plots / "tost_forest", title=f"TOST vs {comp.baseline} ({metric})")
        md += ["![TOST forest plot](plots/tost_forest.png)", ""]

    stat_notes = sorted({f"{k[0]}/{k[1]}: {n}" for k, st in studies.items() for n in st.notes})
    if stat_notes:
        md += ["Notes on the comparisons (systems that ranked alike are compared all the same: their difference "
               "is exactly zero):", "", *[f"- {n}" for n in stat_notes], ""]

    # ---- per-seed spread ---------------------------------------------------------------------------------
    if len(cfg.grid.seeds) > 1:
        md += ["## Spread over seeds", "", f"Mean and t interval of {metric} over seeds, per collection.", ""]
        rows = []
        for key, st in studies.items():
            for coll, res in st.collections.items():
                for s, m in res.over_seeds.items():
                    rows.append([key[0], s, coll, _f(m.mean), f"[{_f(m.low)}, {_f(m.high)}]", _f(m.sd)])
        md += [_md_table(["arch", "system", "collection", "mean", "interval", "sd"], rows), ""]
        md += _seed_stability(studies, by_seed, comp.margin, seeds)

    # ---- training convergence -----------------------------------------------------------------------------
    _convergence(md, cell_arts)

    # ---- diagnostics -------------------------------------------------------------------------------------
    diameters = _diagnostics(md, diags, plots, cfg, plot_entropy_histograms, plot_diameter_per_strategy, mined)
    _per_member(md, diags, cfg, plan)

    # ---- the entropy study -------------------------------------------------------------------------------
    if band_studies:
        _entropy_study(md, cfg, band_studies, groups, plots, plot_tost_forest)

    # ---- the budget study --------------------------------------------------------------------------------
    if budget_studies:
        _budget_study(md, cfg, budget_studies, cell_arts, plots, plot_tost_forest)

    # ---- cost ---------------------------------------------------------------------------------------------
    costs = _costs(study, mined, scores, cell_arts, studies)
    md += ["## Cost", "",
           "Teacher calls are the distinct (query, document) pairs the teacher scored: while mining (teacher "
           "re-ranking, ensemble filter) and to label the groups. Documents are those the students saw (the "
           "budget). Wall-clock times are in `costs.md` and the plot, which differ from run to run.", ""]
    md += [_md_table(["strategy", "teacher calls (mining)", "teacher calls (labels)", "groups",
                      "documents seen per cell"],
                     [[s, c["teacher_calls_mining"], c["teacher_calls_labels"], c["groups"], c["docs_per_cell"]]
                      for s, c in costs.items()]), ""]
    calls = [CostPoint(s, float(c["teacher_calls_mining"] + c["teacher_calls_labels"]), c["effectiveness"])
             for s, c in costs.items() if math.isfinite(c["effectiveness"])]
    if calls:
        plot_cost_vs_effectiveness(calls, plots / "teacher_calls_vs_effectiveness",
                                   xlabel="teacher calls (mining + labels)", ylabel=f"mean {metric}",
                                   title="Teacher calls vs effectiveness per strategy")
        md += ["![teacher calls vs effectiveness](plots/teacher_calls_vs_effectiveness.png)", ""]
    points = []
    for s, c in costs.items():
        if math.isfinite(c["effectiveness"]):
            points.append(CostPoint(s, float(c["mining_seconds"] + c["training_seconds"]
                                             + c["scoring_seconds"]), c["effectiveness"]))
    if points:
        plot_cost_vs_effectiveness(points, plots / "cost_vs_effectiveness",
                                   xlabel="mining + scoring + training seconds", ylabel=f"mean {metric}",
                                   title="Cost vs effectiveness per strategy")
        md += ["![cost vs effectiveness](plots/cost_vs_effectiveness.png)", ""]
    shared = _cells_at_once(cell_arts, one_device=cfg.executor.kind != "ray")
    _write_costs(out_dir, costs, metric, shared if shared > 1 else 0)

    # ---- claims ------------------------------------------------------------------------------------------
    md += ["## The paper's claims, read from this run", ""]
    claims: dict[str, Any] = {}
    md += _claims(cfg, studies, diameters, band_studies, claims)

    text = "\n".join(md).rstrip() + "\n"
    report = out_dir / "report.md"
    report.write_text(text)
    (out_dir / "report.json").write_text(json.dumps(
        {**{"|".join(map(str, k)): v.to_dict() for k, v in studies.items()},
         **{"entropy|" + "|".join(map(str, k)): v.to_dict() for k, v in band_studies.items()},
         "claims": json_ready(claims)},
        indent=2, sort_keys=True))
    _write_html(out_dir, text)
    logger.info("report: %s", report)
    return report


def _crossfit_plan(teacher: str | None):
    """The plan of the study's teacher when it is cross-fitted (trained so, or given as such a folder)."""
    from rankdistill.teachers.crossfit import is_crossfit, read_crossfit

    if teacher is None or not is_crossfit(teacher):
        return None
    try:
        return read_crossfit(teacher)
    except UserInputError as e:  # a member folder gone: nothing to split by
        logger.warning("the cross-fitted teacher's plan is unreadable: %s", e)
        return None


def _per_member(md: list[str], diags, cfg, plan) -> None:
    """For a cross-fitted teacher, the labels of the entropy study's domain (or the first diagnosed strategy)
    per member: each training query's labels come from one member, and members that differ in confidence would
    make the entropy bands sort queries partly by member."""
    import pandas as pd

    if not diags or plan is None:
        return
    es = cfg.entropy_study
    strategy = next(s for s in (es.strategy if es else None, "bm25", *diags) if s in diags)
    frame = pd.read_parquet(diags[strategy].file("stats.parquet"))
    ent = f"softmax_entropy_norm_T{cfg.diagnostics.temperature:g}_with_pos"
    if ent not in frame or "query_id" not in frame:
        return
    frame = frame.assign(member=[" + ".join(map(str, plan.route(str(q)))) for q in frame["query_id"]])
    rows = []
    for member, part in frame.groupby("member", sort=True):
        e = part[ent].to_numpy(dtype=float)
        rows.append([member, len(part), *(_f(float(np.nanquantile(e, p)), 3) for p in (0.25, 0.5, 0.75)),
                     _f(float(np.mean(part["positive_rank"].to_numpy() > 1)), 3) if "positive_rank" in part else ""])
    md += ["### Labels per cross-fitted member", "",
           f"The teacher is cross-fitted, so each training query of the `{strategy}` groups is labelled by the "
           "member that never saw it. Members that differ in confidence would make entropy bands sort queries "
           "partly by member; normalised entropy (positive included) per member:", "",
           _md_table(["member", "queries", "entropy q25", "entropy median", "entropy q75", "positive not first"],
                     rows), ""]


def _training_summary(art) -> dict:
    """A trained cell's ``training.json`` (empty when the cell or the file is missing)."""
    summary = art.path / "model" / "training.json" if art is not None else None
    return json.loads(summary.read_text()) if summary is not None and summary.is_file() else {}


def _epoch_means(losses: Sequence[float], steps_per_epoch: int) -> list[float]:
    """Mean training loss of each full epoch (steps ``[e * spe, (e + 1) * spe)``); the steps of an
    unfinished last epoch are left out."""
    spe = max(1, int(steps_per_epoch))
    return [_mean(losses[e * spe:(e + 1) * spe]) for e in range(len(losses) // spe)]


def _relative_change(pairs: Sequence[tuple[float, float]], alpha: float = 0.05) -> str:
    """Mean over cells of :math:`(b_i - a_i) / a_i` for ``(a_i, b_i)`` pairs, with its ``1 - 2 alpha``
    Student-t interval across cells (none from one cell)."""
    from scipy import stats

    r = np.array([(b - a) / abs(a) for a, b in pairs if a and math.isfinite(a) and math.isfinite(b)])
    if not r.size:
        return "-"
    if r.size < 2:
        return f"{100 * r[0]:+.1f}%"
    half = stats.t.ppf(1 - alpha, r.size - 1) * r.std(ddof=1) / math.sqrt(r.size)
    return f"{100 * r.mean():+.1f}% [{100 * (r.mean() - half):+.1f}, {100 * (r.mean() + half):+.1f}]"


def _convergence(md: list[str], cell_arts) -> None:
    """Training losses per architecture and loss, as means over whole epochs of the cells' loss curves
    (``losses.tsv``, with ``steps_per_epoch`` from ``training.json``), and how much the last epoch still
    moved from the one before.

    Epochs, not windows of steps: every epoch holds each training query once, so two epochs differ in what
    the model learned, not in which queries they hold. Windows of steps do differ in that, and in the same
    way for every cell of a seed (its cells share the query order), so their trend is the order's, not the
    training's: in the first GPU run the step losses of different strategies correlated at 0.1 to 0.8 around
    their trend."""
    from rankdistill.training.engine import read_losses

    curves: dict[tuple[str, str, str], list[list[float]]] = {}
    for cell, art, _ in cell_arts:
        losses = read_losses(art.path / "model") if art is not None else []
        spe = _training_summary(art).get("steps_per_epoch")
        epochs = _epoch_means(losses, spe) if losses and spe else []
        if epochs:
            group = ("entropy bands" if cell.selection != "all" else
                     f"all queries, {_budget_name(cell.budget)}" if cell.budget else "all queries")
            curves.setdefault((cell.arch, cell.loss, group), []).append(epochs)
    if not curves:
        return
    md += ["## Training convergence", "",
           "Mean training loss per epoch over the cells of each architecture and loss (all strategies and "
           "seeds); an epoch holds each of the cell's training queries once, so epochs compare like with like. "
           "The last column is the change from the last epoch but one to the last, relative, averaged over the "
           "cells with its 90% interval across them: near zero means the loss had flattened within the budget; "
           "clearly negative means it was still falling. This is training loss: it says whether the budget let "
           "the optimisation settle, not whether the students overfit.", ""]
    rows = []
    for (arch, loss, group), per_cell in curves.items():
        n = min(len(e) for e in per_cell)
        mean = [_mean([e[i] for e in per_cell]) for i in range(n)]
        change = _relative_change([(e[n - 2], e[n - 1]) for e in per_cell]) if n >= 2 else "-"
        rows.append([arch, loss, group, len(per_cell), n, _f(mean[0]), _f(mean[-2]) if n >= 2 else "-",
                     _f(mean[-1]), change])
    md += [_md_table(["arch", "loss", "trained on", "cells", "epochs", "first epoch", "last epoch but one",
                      "last epoch", "last vs the one before"], rows), ""]


def _budget_name(docs: int) -> str:
    """A budget as a system name in the budget study's tables: ``25,856 docs``."""
    return f"{docs:,} docs"


def _budget_study(md: list[str], cfg, budget_studies: dict, cell_arts, plots: Path, plot_forest) -> None:
    """Section of the budget study: each budget against the study's, per (student, loss, strategy) and test
    collection (paired TOST, the comparison's margin and alpha), with the epochs each budget makes.

    It reads convergence where it matters: a larger budget that is equivalent to the study's within the margin
    on every collection means the study's budget did not stop the students short; a significant gain means it
    did."""
    from rankdistill.reports import table_from_studies, to_markdown

    comp, bs = cfg.comparison, cfg.budget_study
    epochs: dict[int, set[float]] = {}
    for cell, art, _ in cell_arts:
        e = _training_summary(art).get("epochs") if cell.selection == "all" else None
        if e is not None:
            epochs.setdefault(cell.budget or cfg.student.budget_docs, set()).add(float(e))
    md += ["## Budget study", "",
           f"The same students trained on other document budgets than the study's "
           f"({cfg.student.budget_docs:,} documents), on all queries; each budget is compared with the study's "
           f"(paired TOST per test collection, margin {comp.margin:g}, alpha {comp.alpha:g}). A larger budget "
           "equivalent to the study's everywhere means the study's budget did not stop the students short.", ""]
    rows = [[_budget_name(n), "the study's" if n == cfg.student.budget_docs else "compared with it",
             ", ".join(f"{e:g}" for e in sorted(epochs.get(n, ()))) or "-"]
            for n in sorted({cfg.student.budget_docs, *bs.budgets})]
    md += [_md_table(["budget", "role", "epochs over the training queries"], rows), ""]
    tost_rows, forest = [], []
    for (arch, loss, strategy, gs), st in budget_studies.items():
        md += [f"### {arch}-encoder students, {loss}, {strategy}, group size {gs}", "",
               to_markdown(table_from_studies([st])), ""]
        for coll, res in st.collections.items():
            for row in res.report.rows:
                t = row.tost
                tost_rows.append([arch, loss, strategy, row.name, coll, f"{row.mean_diff:+.4f}",
                                  f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]", t.verdict])
                forest.append((f"{arch}/{loss}/{strategy}/{row.name} @ {coll}", t))
    if tost_rows:
        verdicts = {v: sum(r[-1] == v for r in tost_rows) for v in ("equivalent", "different", "inconclusive")}
        md += [f"Each budget minus the study's ({100 * (1 - 2 * comp.alpha):g}% interval of the mean difference):",
               "", _md_table(["arch", "loss", "strategy", "budget", "collection", "mean diff", "interval",
                              "verdict"], tost_rows), "",
               f"Of {len(tost_rows)} comparisons, {verdicts['equivalent']} are equivalent within "
               f"+-{comp.margin:g}, {verdicts['different']} different and {verdicts['inconclusive']} inconclusive.",
               ""]
        plot_forest(forest, plots / "budget_forest", title=f"budgets vs the study's ({comp.metric})")
        md += ["![budgets vs the study's](plots/budget_forest.png)", ""]


def _band_order(es, name: str) -> int:
    """``all`` first, then the bands in the order the config lists them."""
    return 0 if name == "all" or es is None else 1 + list(es.bands).index(name)


def _entropy_study(md: list[str], cfg, band_studies: dict, groups, plots: Path, plot_forest) -> None:
    """Section of the entropy study: band thresholds, means per band with letters, and each band against all
    queries (paired TOST per test collection)."""
    from rankdistill.reports import table_from_studies, to_markdown

    es, comp = cfg.entropy_study, cfg.comparison
    md += ["## Entropy study", "",
           f"Students trained on quantile bands of the teacher's normalised softmax entropy (positive included) over "
           f"the `{es.strategy}` groups, with the same document budget as every other cell, beside the same "
           f"students on all queries (`all`). Same tests, margins and alpha as above; each band is compared with "
           f"`all`.", ""]
    rows = []
    for band in es.bands:
        art = groups.get((es.strategy, band))
        meta_file = art.file("groups.jsonl.meta.json") if art is not None else None
        if meta_file is None or not meta_file.exists():
            continue
        meta = json.loads(meta_file.read_text())
        th = meta["thresholds"]
        lo_edge = "[" if th.get("lower_edge_inclusive") else "("
        rows.append([band, f"{lo_edge}{th['lo_quantile']:g}, {th['hi_quantile']:g}]",
                     f"{lo_edge}{_f(th['lo_value'], 3)}, {_f(th['hi_value'], 3)}]", meta["n_kept"]])
    if rows:
        md += [_md_table(["band", "quantiles", "normalised entropy", "queries kept"], rows), ""]
    forest = []
    tost_rows = []
    for (arch, loss, gs), st in band_studies.items():
        md += [f"### {arch}-encoder students, {loss}, group size {gs}", "", to_markdown(table_from_studies([st])),
               ""]
        for coll, res in st.collections.items():
            for row in res.report.rows:
                t = row.tost
                tost_rows.append([arch, loss, row.name, coll, f"{row.mean_diff:+.4f}",
                                  f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]", t.verdict])
                forest.append((f"{arch}/{loss}/{row.name} @ {coll}", t))
    band_notes = sorted({f"{k[0]}/{k[1]}: {n}" for k, st in band_studies.items() for n in st.notes})
    if band_notes:
        md += ["Notes on the comparisons:", "", *[f"- {n}" for n in band_notes], ""]
    if tost_rows:
        md += [f"Each band minus `all` (paired TOST, margin {comp.margin:g}, alpha {comp.alpha:g}; the interval is "
               f"the {100 * (1 - 2 * comp.alpha):g}% confidence interval of the mean difference):", "",
               _md_table(["arch", "loss", "band", "collection", "mean diff", "interval", "verdict"], tost_rows), ""]
        plot_forest(forest, plots / "entropy_bands_forest", title=f"entropy bands vs all queries ({comp.metric})")
        md += ["![entropy bands vs all](plots/entropy_bands_forest.png)", ""]


def _diagnostics(md: list[str], diags, plots: Path, cfg, plot_hist, plot_diam, mined=None
                 ) -> dict[str, dict[str, float]]:
    """The diagnostics section; returns each strategy's robust diameter per query id (for the locality claim)."""
    import pandas as pd

    per_query: dict[str, dict[str, float]] = {}
    if not diags:
        md += ["## Diagnostics", "", "No teacher in this run: entropy and locality need teacher scores.", ""]
        return per_query
    t = f"T{cfg.diagnostics.temperature:g}"
    ent_col = f"softmax_entropy_nats_{t}_with_pos"
    diam_col = f"diameter_q{cfg.diagnostics.alpha * 100:g}_{cfg.diagnostics.metric}"
    entropies, diameters = {}, {}
    rows = []
    for s, art in diags.items():
        frame = pd.read_parquet(art.file("stats.parquet"))
        ent = frame[ent_col].to_numpy(dtype=float) if ent_col in frame else np.array([])
        diam = frame[diam_col].to_numpy(dtype=float) if diam_col in frame else np.array([])
        kappa = frame[f"log_kappa_{t}"].to_numpy(dtype=float) if f"log_kappa_{t}" in frame else np.array([])
        rank = frame["positive_rank"].to_numpy(dtype=float) if "positive_rank" in frame else np.array([])
        entropies[s], diameters[s] = ent, diam
        if diam.size and "query_id" in frame:
            per_query[s] = dict(zip(frame["query_id"].astype(str), diam.tolist()))
        def q(a, p):
            return (float(np.nanquantile(a, p)) if a.size else math.nan)
        counts = mined[s].info.get("counts", {}) if mined and s in mined else {}
        fill = (counts["random_negatives_added"] / counts["negatives_total"]
                if counts.get("negatives_total") and "random_negatives_added" in counts else math.nan)
        rows.append([s, len(frame), _f(q(ent, 0.25), 3), _f(q(ent, 0.5), 3), _f(q(ent, 0.75), 3),
                     _f(q(diam, 0.5), 3), _f(q(kappa, 0.5), 3),
                     _f(float(np.mean(rank > 1)) if rank.size else math.nan, 3), _f(fill, 3)])
    md += ["## Diagnostics per strategy", "",
           f"Teacher softmax entropy over each training group (nats, tau={cfg.diagnostics.temperature:g}, positive "
           f"included), robust diameter ({cfg.diagnostics.alpha:g}-quantile of pairwise {cfg.diagnostics.metric} "
           "distances of the group's documents, encoder "
           f"`{cfg.diagnostics.encoder or 'sentence-transformers/all-MiniLM-L6-v2'}`), log kappa (sampling bias), "
           "the share of groups where the teacher ranks a negative above the positive (false-negative "
           "signal), and the share of the negative pools that mining filled up with random documents because the "
           "strategy found too few (a strategy near 1 is random sampling in disguise).", ""]
    md += [_md_table(["strategy", "queries", "entropy q25", "entropy median", "entropy q75", "diameter median",
                      "log kappa median", "positive not first", "random fill-up"], rows), ""]
    if any(v.size for v in entropies.values()):
        plot_hist(entropies, plots / "entropy_histograms")
        md += ["![entropy histograms](plots/entropy_histograms.png)", ""]
    if any(v.size for v in diameters.values()):
        plot_diam(diameters, plots / "diameter_per_strategy")
        md += ["![diameter per strategy](plots/diameter_per_strategy.png)", ""]
    return per_query


def _cell_artifacts(cell_arts) -> dict[Path, Any]:
    """Every artifact of the cells, training and evaluation, once each."""
    return {a.path: a for _c, t, evals in cell_arts for a in (t, *evals.values()) if a is not None}


def _busy_intervals(arts) -> list[tuple[float, float]]:
    return [(a.manifest["started"], a.manifest["finished"]) for a in arts
            if "started" in a.manifest and "finished" in a.manifest]


def _gpu_seconds(cell_arts, one_device: bool) -> dict[Path, float]:
    """GPU-seconds of each artifact of the cells that ran on a GPU. On one machine (the local and process
    executors) concurrent cells shared its GPU, so each gets its fair share (:func:`.shares.fair_shares` over
    the wall-clock intervals of every GPU artifact of the cells, training and evaluation); elsewhere (Ray, one
    GPU per worker), or for manifests without times, its wall seconds."""
    arts = {path: a for path, a in _cell_artifacts(cell_arts).items() if a.manifest.get("gpu_seconds", 0.0) > 0}
    out = {path: float(a.manifest["gpu_seconds"]) for path, a in arts.items()}
    timed = [a for a in arts.values() if "started" in a.manifest and "finished" in a.manifest]
    if one_device and timed:
        shares = fair_shares(_busy_intervals(timed))
        out.update({a.path: share for a, share in zip(timed, shares)})
    return out


def _cells_at_once(cell_arts, one_device: bool) -> int:
    """How many cells ran side by side on the one machine at its busiest, from the recorded times of their
    artifacts (a cell trains, then evaluates, so its own artifacts never overlap); 0 off one machine. Read
    from the run, not from the config: a report may be written by a later call with another pool size."""
    return peak_overlap(_busy_intervals(_cell_artifacts(cell_arts).values())) if one_device else 0


def _costs(study, mined, scores, cell_arts, studies) -> dict[str, dict]:
    from rankdistill.experiments.runner import grid_cells

    gpu = _gpu_seconds(cell_arts, one_device=study.cfg.executor.kind != "ray")
    grid = set(grid_cells(study.cfg))  # the entropy and budget studies' cells are not a strategy's cost
    out = {}
    for s, art in mined.items():
        sc = scores.get(s)
        cells = [(c, t) for c, t, _ in cell_arts if c.strategy == s and c in grid]
        means = []
        for st in studies.values():
            for res in st.collections.values():
                for name, m in res.over_seeds.items():
                    if name.split("/")[0] == s:
                        means.append(m.mean)
        out[s] = {
            "teacher_calls_mining": art.info.get("teacher_calls", 0),
            "teacher_calls_labels": sc.info.get("teacher_calls", 0) if sc else 0,
            "teacher_calls_computed": art.info.get("teacher_calls_computed", art.info.get("teacher_calls", 0))
            + (sc.info.get("teacher_calls_computed", sc.info.get("teacher_calls", 0)) if sc else 0),
            "groups": art.info.get("counts", {}).get("groups", 0),
            "docs_per_cell": max((t.info.get("realised_docs") or 0 for _, t in cells), default=0),
            "mining_seconds": art.manifest.get("seconds", 0.0),
            "scoring_seconds": sc.manifest.get("seconds", 0.0) if sc else 0.0,
            "training_seconds": float(sum(t.manifest.get("seconds", 0.0) for _, t in cells)),
            "training_gpu_seconds": float(sum(gpu.get(t.path, 0.0) for _, t in cells)),
            "effectiveness": _mean(means),
        }
    return out


def _write_costs(out_dir: Path, costs: dict, metric: str, shared: int = 0) -> None:
    rows = [[s, f"{c['mining_seconds']:.1f}", f"{c['scoring_seconds']:.1f}", f"{c['training_seconds']:.1f}",
             f"{c['training_gpu_seconds']:.1f}", c["teacher_calls_mining"] + c["teacher_calls_labels"],
             c["teacher_calls_computed"], _f(c["effectiveness"])] for s, c in costs.items()]
    note = (f" Cells ran up to {shared} at a time on one machine. A cell's training GPU-seconds are its share of "
            "the one GPU: at each moment, the wall time divided by the number of cells using the GPU then "
            "(training or evaluating), so the shares add up to the time the GPU had work. The training seconds "
            "are wall seconds, counted once per cell." if shared else "")
    text = f"# Measured cost per strategy\n\nSeconds as recorded when each artifact was first computed.{note}\n\n" + \
        _md_table(["strategy", "mining s", "scoring s", "training s (all cells)", "training GPU-s", "teacher calls",
                   "of them scored here", f"mean {metric}"], rows) + \
        "\nTeacher calls: the pairs the strategy needs scored, its cost on its own. Of them scored here: the ones " \
        "this study had not already scored for an earlier strategy (strategies share one store of teacher " \
        "scores), so the seconds above are those of the pairs scored here.\n"
    (out_dir / "costs.md").write_text(text)


_CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}


def _listing(findings, limit: int = 10, by_seed: Mapping[str, Mapping[int, float]] | None = None) -> str:
    """``label: diff [low, high]; ...``, at most ``limit`` of them; with ``by_seed`` (``{label: {seed: mean
    difference}}``) each finding of more than one seed also gives its difference seed by seed, and the listing
    ends with how many keep their sign in every seed (:func:`_same_sign`)."""
    items = []
    for f in findings:
        per = (by_seed or {}).get(f.label, {})
        seeds = f" (seed by seed: {', '.join(f'{d:+.4f}' for _, d in sorted(per.items()))})" if len(per) > 1 else ""
        items.append(f.describe() + seeds)
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more + _same_sign(findings, by_seed)


def _same_sign(findings, by_seed: Mapping[str, Mapping[int, float]] | None) -> str:
    """`` (k of n with the sign of the seed average in every seed)`` over the findings with more than one seed,
    or nothing. The intervals are over queries, of values averaged over seeds; a difference that some seed
    reverses rests on seeds that disagree, which they do not show (docs/results.md: between seeds a
    cross-encoder cell moved by more than the margin)."""
    signs = [all(round(d, 4) * f.mean_diff > 0 for d in per.values())  # as listed: +0.0000 has no sign
             for f in findings if len(per := (by_seed or {}).get(f.label, {})) > 1]
    if not signs:
        return ""
    return f" ({sum(signs)} of {len(signs)} with the sign of the seed average in every seed)"


def _verdicts_by_seed(studies: dict) -> dict[tuple, dict[int, str]]:
    """``{(study key, collection, system): {seed: verdict}}``: each comparison's TOST within each seed alone
    (:meth:`~rankdistill.stats.study.CollectionResult.verdicts_by_seed`)."""
    return {(key, coll, system): verdicts for key, st in studies.items() for coll, res in st.collections.items()
            for system, verdicts in res.verdicts_by_seed().items()}


def _seed_stability(studies: dict, by_seed: dict[tuple, dict[int, str]], margin: float,
                    seeds: Sequence[int]) -> list[str]:
    """How far the seeds agree: the spread of a cell's metric between seeds against the margin, and how many
    verdicts of the seed average every seed gives on its own.

    The paired tests run on per-query values averaged over seeds, with intervals over queries: they do not see
    the variation between training runs, which on this study's GPU was of the size of the margin even between
    two runs of one seed (docs/results.md). A verdict every seed gives is one that variation did not make."""
    sds = sorted(m.sd for st in studies.values() for res in st.collections.values() for m in res.over_seeds.values()
                 if math.isfinite(m.sd))
    md = []
    if sds:
        md += [f"Between seeds a cell's value varies with a median sd of {_f(float(np.median(sds)))} (largest "
               f"{_f(sds[-1])}), against the margin of {margin:g}.", ""]
    if not by_seed:
        return md
    averaged = {(key, coll, row.name): row.tost.verdict for key, st in studies.items()
                for coll, res in st.collections.items() for row in res.report.rows}
    opposite = {"equivalent": "different", "different": "equivalent"}
    rows, contradicted = [], []
    for verdict in ("equivalent", "different", "inconclusive"):
        these = [k for k, v in averaged.items() if v == verdict]
        # every seed of the study, each with its own verdict (a comparison a seed could not make is not counted)
        every = sum(set(by_seed.get(k, {})) >= set(seeds) and all(v == verdict for v in by_seed[k].values())
                    for k in these)
        rows.append([verdict, len(these), every])
        for k in these:
            against = [s for s, v in by_seed.get(k, {}).items() if v == opposite.get(verdict)]
            if against:
                key, coll, system = k
                contradicted.append(f"{key[0]}/{key[1]}/{system.split('/')[0]} @ {coll} ({verdict}; "
                                    f"{opposite[verdict]} in seed {', '.join(map(str, against))})")
    md += ["Each comparison against the baseline was also run within each seed alone (the last column of the "
           "equivalence table above). A seed alone has noisier per-query values than their average, so it often "
           "stays inconclusive where the average decides; what undoes a verdict is a seed that gives the "
           "opposite one (equivalent where the average is different, or the reverse).", "",
           _md_table(["verdict of the seed average", "comparisons", "given by every seed on its own"], rows), ""]
    if contradicted:
        more = f"; and {len(contradicted) - 10} more" if len(contradicted) > 10 else ""
        md += [f"Verdicts of the average that some seed reverses: {'; '.join(contradicted[:10])}{more}.", ""]
    else:
        md += ["No seed reverses a verdict of the average (equivalent in one, different in another).", ""]
    return md


def _comparisons(studies: dict, keep) -> dict[str, list[tuple[str, Any]]]:
    """Per architecture, the (label, TOST) of every strategy-vs-baseline comparison of the studies whose key
    passes ``keep``; labels read ``loss/strategy @ collection``."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for key, st in studies.items():
        if not keep(key):
            continue
        for coll, res in st.collections.items():
            for row in res.report.rows:
                out.setdefault(key[0], []).append((_label(key, row.name, coll), row.tost))
    return out


def _label(key: tuple, system: str, coll: str) -> str:
    return f"{key[1]}/{system.split('/')[0]} @ {coll}"


def _diffs_by_seed(studies: dict) -> dict[str, dict[str, dict[int, float]]]:
    """Per architecture, ``{label: {seed: mean difference from the baseline}}`` under the labels of
    :func:`_comparisons` (:meth:`~rankdistill.stats.study.CollectionResult.diffs_by_seed`)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for key, st in studies.items():
        for coll, res in st.collections.items():
            for system, per in res.diffs_by_seed().items():
                out.setdefault(key[0], {})[_label(key, system, coll)] = per
    return out


def _claims(cfg, studies, diameters, band_studies=None, record: dict | None = None) -> list[str]:
    """The paper's claims, each judged with the test its logical form needs (:mod:`rankdistill.stats.claims`):
    "adds little" over every comparison (intersection-union of non-superiority tests), unions such as "some
    strategy is better" adjusted across their family with the configured correction. The verdicts, with their
    numbers, also go into ``record`` (``report.json``'s ``claims``)."""
    from dataclasses import asdict

    from rankdistill.stats.claims import adds_little, differences, paired_shift, significant

    record = {} if record is None else record

    comp = cfg.comparison
    level = f"{100 * (1 - 2 * comp.alpha):g}%"
    corr = _CORRECTION_NAMES.get(comp.correction, comp.correction)
    out: list[str] = [
        f"Each claim is judged with the test its form needs. A claim about every comparison (\"adds little\") "
        f"holds only where each comparison shows it at alpha {comp.alpha:g}: an interval that merely contains "
        f"zero shows nothing. A claim about some comparison (\"is better\", \"hurts\") is tested with {corr} "
        f"correction across the comparisons it ranges over, so that chance wins among many comparisons are not "
        f"read as findings. Differences are strategy (or band) minus baseline, with {level} intervals.", ""]
    # 1. elaborate sampling adds little under distillation
    distil = _comparisons(studies, lambda k: k[1] in TEACHER_LOSSES)
    seeds = _diffs_by_seed(studies)
    if any(len(per) > 1 for fam in seeds.values() for per in fam.values()):
        record["differences_by_seed"] = seeds
    if distil:
        losses = ", ".join(sorted({k[1] for k in studies if k[1] in TEACHER_LOSSES}))
        parts = []
        for arch, fam in distil.items():
            r = adds_little(fam, comp.margin, comp.alpha, comp.correction)
            record.setdefault("adds_little_under_distillation", {})[arch] = asdict(r)
            per = seeds.get(arch, {})
            text = (f"*{arch}-encoders*: {len(r.shown_little)} of {r.n} comparisons show a gain below "
                    f"+{comp.margin:g} (one-sided test at alpha {comp.alpha:g}, the upper half of the TOST). ")
            if r.verdict == "supported":
                text += "Every comparison does, so the run **supports** the claim here."
            elif r.verdict == "contradicted":
                text += (f"Better than {comp.baseline} by more than the margin ({corr}-corrected): "
                         f"{_listing(r.beyond_margin, by_seed=per)}; the run **contradicts** the claim there.")
            else:
                undet = sorted(r.undetermined, key=lambda f: -f.ci_high)
                text += (f"The run **does not settle** the claim: {len(undet)} intervals reach the margin, "
                         f"widest first: {_listing(undet, 6)}.")
            if r.better:
                text += (f" Significantly better than {comp.baseline} ({corr}-corrected): "
                         f"{_listing(r.better, by_seed=per)}.")
            if r.worse:
                text += f" Significantly worse: {_listing(r.worse, by_seed=per)}."
            parts.append(text)
        out += [f"**Elaborate sampling adds little under distillation** ({losses}; each strategy against "
                f"{comp.baseline}, per test collection, margin {comp.margin:g} {comp.metric}).", "",
                *[f"- {p}" for p in parts], ""]
    else:
        out += ["**Elaborate sampling adds little under distillation.** Not tested: no distillation loss in the "
                "grid.", ""]
    # 2. contrastive labels: does sampling matter more there?
    lce = _comparisons(studies, lambda k: k[1] == "lce")
    if lce:
        parts = []
        for arch, fam in lce.items():
            a = differences(fam, comp.alpha, comp.correction)
            text = (f"*{arch}-encoders*: under lce {len(a.higher) + len(a.lower)} of {a.n} comparisons differ "
                    f"from {comp.baseline} (two-sided, {corr}-corrected; mean absolute difference "
                    f"{a.mean_abs_diff:.4f})")
            record.setdefault("sampler_matters_more_under_lce", {})[arch] = {"lce": asdict(a)}
            if distil.get(arch):
                b = differences(distil[arch], comp.alpha, comp.correction)
                record["sampler_matters_more_under_lce"][arch]["distillation"] = asdict(b)
                na, nb = len(a.higher) + len(a.lower), len(b.higher) + len(b.lower)
                text += (f", under distillation {nb} of {b.n} (mean absolute difference {b.mean_abs_diff:.4f}): "
                         + ("neither family shows a difference from the baseline" if na == nb == 0 else
                            f"the sampler matters {'more' if na / a.n > nb / b.n else 'no more'} under lce in "
                            "this run"))
            text += "."
            if a.higher or a.lower:
                text += f" Under lce: {_listing(a.higher + a.lower, by_seed=seeds.get(arch))}."
            parts.append(text)
        out += ["**Under contrastive labels (lce) the sampler matters more** (the paper's contrast to the "
                "claim above).", "", *[f"- {p}" for p in parts], ""]
    # 3/4. entropy claims need the entropy study or entropy selections
    bands = [s for s in cfg.grid.selections if s != "all"]
    if band_studies:
        out += _entropy_claims(cfg, band_studies, record)
    elif bands:
        rows = []
        for k, st in studies.items():
            if k[3] == "all":
                continue
            for coll, res in st.collections.items():
                for name, m in res.over_seeds.items():
                    rows.append((k[3], k[1], name.split("/")[0], coll, m.mean))
        best = max(rows, key=lambda r: r[4]) if rows else None
        text = "; ".join(f"{sel}/{loss}/{s} @ {c}: {v:.4f}" for sel, loss, s, c, v in sorted(rows))
        out += [f"**Moderate entropy is best; high entropy hurts.** Students trained on entropy bands: {text}. "
                + (f"The best band is {best[0]} ({best[1]}, {best[2]} @ {best[3]})." if best else ""), ""]
    else:
        out += ["**Moderate entropy is best; high entropy hurts.** Not tested: the study has no entropy study (add an "
                "`[entropy_study]` section with its bands, or entropy selections to the grid).", ""]
    # 5. locality
    per_query = diameters or {}
    if comp.baseline in per_query:
        base = per_query[comp.baseline]
        shifts = [x for s in per_query if s not in (comp.baseline, "random")
                  if (x := paired_shift(s, per_query[s], base, comp.alpha)) is not None]
        fam = [(x.label, x) for x in shifts]
        smaller = {f.label for f in significant(fam, "less", comp.alpha, comp.correction)}
        larger = {f.label for f in significant(fam, "greater", comp.alpha, comp.correction)}
        record["locality"] = {x.label: {**asdict(x), "verdict": "contradicted" if x.label in smaller else
                                        "supported" if x.label in larger else "not shown"} for x in shifts}
        rows = [f"{x.label}: mean {x.mean_diff:+.3f} [{x.ci_low:+.3f}, {x.ci_high:+.3f}], median {x.median_diff:+.3f}, "
                f"smaller for {100 * x.share_smaller:.0f}% of {x.n} queries" for x in shifts]
        verdicts = [f"{x.label} " + ("**more compact** (contradicts the claim)" if x.label in smaller else
                                     "**less compact** (supports the claim)" if x.label in larger else
                                     "no difference shown (consistent with the claim, but does not show it)")
                    for x in shifts]
        out += [f"**Hard negatives do not make the query space more compact.** Each group's robust diameter minus "
                f"that of the same query's {comp.baseline} group (paired over queries, {level} t intervals, "
                f"{corr}-corrected one-sided tests across the strategies): {'; '.join(rows) or 'none'}. "
                + ("Per strategy: " + "; ".join(verdicts) + "." if verdicts else ""), ""]
    else:
        out += ["**Hard negatives do not make the query space more compact.** Not tested: no diagnostics of the "
                f"{comp.baseline} groups.", ""]
    return out


def _entropy_claims(cfg, band_studies: dict, record: dict | None = None) -> list[str]:
    """Claims 3 and 4 from the entropy study. Moderate entropy: which band is best per (arch, loss,
    collection), and the pre-specified per-query contrast of the middle bands against the outer ones (mean of
    the middle bands minus mean of the first and last; positive means an inverted U), corrected across the
    cases. High entropy: the highest band minus all queries, one-sided in each direction, corrected across the
    cases."""
    from dataclasses import asdict

    from rankdistill.stats.claims import Finding, contrast, significant

    record = {} if record is None else record

    es, comp = cfg.entropy_study, cfg.comparison
    corr = _CORRECTION_NAMES.get(comp.correction, comp.correction)
    level = f"{100 * (1 - 2 * comp.alpha):g}%"
    bands = list(es.bands)
    top = bands[-1]
    inner = bands[1:-1]
    outer = [bands[0], bands[-1]]
    weights = {**{b: 1 / len(inner) for b in inner}, **{b: -1 / len(outer) for b in outer}}
    best_rows, moderate_best, hurts, contrasts, n = [], 0, [], [], 0
    hurt_seeds: dict[str, dict[int, float]] = {}
    best_bands: dict[str, str] = {}
    for (arch, loss, _gs), st in band_studies.items():
        for coll, res in st.collections.items():
            means = {b: res.over_seeds[b] for b in bands if b in res.over_seeds}
            if not means:
                continue
            n += 1
            best = max(means, key=lambda b: means[b].mean)
            m = means[best]
            moderate_best += int(best in inner)
            seeds = f" [{_f(m.low)}, {_f(m.high)}] over seeds" if math.isfinite(m.low) else ""
            best_rows.append(f"{arch}/{loss} @ {coll}: {best} ({m.mean:.4f}{seeds})")
            best_bands[f"{arch}/{loss} @ {coll}"] = best
            for row in res.report.rows:
                if row.name == top:
                    hurts.append((f"{arch}/{loss} @ {coll}", row.tost))
                    hurt_seeds[f"{arch}/{loss} @ {coll}"] = res.diffs_by_seed().get(top, {})
            if inner and all(b in res.values for b in bands):
                c = contrast(f"{arch}/{loss} @ {coll}", res.values, weights, comp.alpha)
                if c is not None:
                    contrasts.append((c.label, c))
    out = [f"**Moderate entropy is best.** Best band per student and collection (bands in order of entropy: "
           f"{', '.join(bands)}): {'; '.join(best_rows)}. A middle band is best in {moderate_best} of {n} cases"
           + (f" (chance alone would give about {n * len(inner) / len(bands):.1f})." if inner else ".")]
    record["moderate_entropy_is_best"] = {"best_band": best_bands, "middle_best": moderate_best, "cases": n}
    if contrasts:
        up = significant(contrasts, "greater", comp.alpha, comp.correction)
        down = significant(contrasts, "less", comp.alpha, comp.correction)
        record["moderate_entropy_is_best"].update(
            contrast=[asdict(c) for _, c in contrasts], middle_better=[f.label for f in up],
            middle_worse=[f.label for f in down], verdict=_mixed_verdict(up, down))
        out[-1] += (f" The middle bands ({', '.join(inner)}) minus the outer ones ({', '.join(outer)}), per query and "
                    f"averaged over seeds, with {level} intervals: "
                    + "; ".join(f"{label}: {c.mean_diff:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
                                for label, c in contrasts)
                    + ". " + _union_verdict(corr, len(contrasts), "the middle bands are", "better", up, "worse", down))
    out.append("")
    worse = significant(hurts, "less", comp.alpha, comp.correction)
    better = significant(hurts, "greater", comp.alpha, comp.correction)
    parts = _listing([Finding(name, t.mean_diff, t.ci_low, t.ci_high, math.nan) for name, t in hurts], len(hurts),
                     hurt_seeds)
    if not hurts:
        verdict = "No comparison was possible."
    else:
        verdict = _union_verdict(corr, len(hurts), "it is", "worse", worse, "better", better)
    record["high_entropy_hurts"] = {
        "band": top, "cases": [{"label": name, "mean_diff": t.mean_diff, "ci_low": t.ci_low, "ci_high": t.ci_high}
                               for name, t in hurts],
        "worse": [f.label for f in worse], "better": [f.label for f in better], "by_seed": hurt_seeds,
        "verdict": _mixed_verdict(worse, better) if hurts else "not tested"}
    out += [f"**High entropy hurts.** The highest band ({top}) minus all queries, with {level} intervals: {parts}. "
            f"{verdict}", ""]
    return out


_VERDICT_TEXT = {"supported": "**supports** the claim", "contradicted": "**contradicts** the claim",
                 "mixed": "gives **mixed** evidence", "not shown": "**does not show** it"}


def _union_verdict(corr: str, n: int, subject: str, pro_word: str, pro, contra_word: str, contra) -> str:
    """``After <corr> correction across the <n> cases <subject> significantly <pro_word> in k (labels) and
    significantly <contra_word> in m (labels): the run <verdict>.``"""
    def named(found) -> str:
        return f" ({', '.join(f.label for f in found)})" if found else ""

    return (f"After {corr} correction across the {n} cases {subject} significantly {pro_word} in {len(pro)}"
            f"{named(pro)} and significantly {contra_word} in {len(contra)}{named(contra)}: the run "
            f"{_VERDICT_TEXT[_mixed_verdict(pro, contra)]}.")


def _mixed_verdict(pro, contra) -> str:
    """The verdict of a union claim from the cases that support it and those that go against it: ``supported``,
    ``contradicted``, ``mixed`` or ``not shown``."""
    if pro and not contra:
        return "supported"
    if contra and not pro:
        return "contradicted"
    return "mixed" if pro else "not shown"


def _write_html(out_dir: Path, markdown_text: str) -> None:
    """A self-contained HTML page: the report's text with the PNG plots inlined."""
    body = []
    in_table = in_list = False
    for line in markdown_text.splitlines():
        if in_list and not line.startswith("- "):
            body.append("</ul>")
            in_list = False
        if line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            path = out_dir / src
            if path.exists():
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(f'<p><img alt="{html.escape(src)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("> "):
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    if in_list:
        body.append("</ul>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>rankdistill report</title><style>"
            "body{font-family:sans-serif;max-width:70em;margin:auto}td{border:1px solid #ccc;padding:2px 6px}"
            "table{border-collapse:collapse}img{max-width:100%}</style></head><body>" + "\n".join(body)
            + "</body></html>\n")
    (out_dir / "report.html").write_text(page)


def _inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<i>\1</i>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t.replace("&lt;sup&gt;", "<sup>").replace("&lt;/sup&gt;", "</sup>")
