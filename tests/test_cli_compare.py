"""`rankdistill compare` on real per-query files (TREC DL 2019/2020 runs evaluated with ir_measures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.weightstats import ttost_paired

from rankdistill.cli import main
from rankdistill.errors import UserInputError

SYSTEMS = {"bm25": "bm25", "rm3": "bm25_rm3", "tasb": "d_bert_kd_tasb", "splade": "splade_p_p_ensemble_distil",
           "ada2": "open_ai_ada2"}


@pytest.fixture(scope="module")
def pq(trecdl_manifest, tmp_path_factory) -> dict[str, Path]:
    """Per-query nDCG@10 and AP(rel=2) of the five shipped runs on DL19 and DL20: ``{"dl19/bm25": path}``."""
    from rankdistill.data import read_qrels, read_run
    from rankdistill.evaluation import evaluate_run, write_per_query

    root = trecdl_manifest.parent
    out = tmp_path_factory.mktemp("pq")
    paths = {}
    for year in ("dl19", "dl20"):
        qrels = read_qrels(root / f"qrels.{year}-passage.txt")
        for name, run in SYSTEMS.items():
            res = evaluate_run(read_run(root / "runs" / f"run.{year}.{run}.top100.trec"), qrels,
                               ["nDCG@10", "AP(rel=2)"], 2)
            paths[f"{year}/{name}"] = out / f"{year}.{name}.tsv"
            write_per_query(res.per_query, paths[f"{year}/{name}"])
    return paths


def _files(pq, year="dl19", names=tuple(SYSTEMS)):
    return [str(pq[f"{year}/{n}"]) for n in names]


def test_compare_real_dl19_json(pq, capsys):
    rc = main(["compare", "--per-query", *_files(pq), "--names", *SYSTEMS, "--metric", "nDCG@10",
               "--margin", "0.01", "--bootstrap", "2000", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baseline"] == "bm25" and out["n_queries"] == 43
    # the official Anserini BM25 figure on DL19 (README of the shared data)
    assert out["baseline_mean"] == pytest.approx(0.5058, abs=5e-5)
    rows = {r["name"]: r for r in out["systems"]}
    for strong in ("tasb", "splade", "ada2"):  # learned sparse/dense runs beat BM25 by ~0.2 nDCG@10
        assert rows[strong]["mean_diff"] > 0.15
        assert rows[strong]["tests"]["t"]["pvalue_adjusted"] < 0.01
        assert rows[strong]["tost"]["verdict"] == "different"
    assert rows["rm3"]["tost"]["verdict"] == "inconclusive"
    # Holm over 4 systems: the adjusted p of the smallest raw p is 4 x raw
    raw = sorted((r["tests"]["t"]["pvalue"], r["tests"]["t"]["pvalue_adjusted"]) for r in rows.values())
    assert raw[0][1] == pytest.approx(min(1.0, 4 * raw[0][0]))
    assert "not transitive" in out["equivalence_classes"]["caveat"]
    assert out["missing_queries"] == {}


def test_tost_real_data_matches_statsmodels(pq, capsys):
    main(["compare", "--per-query", *_files(pq, names=("bm25", "rm3")), "--names", "bm25", "rm3",
          "--metric", "nDCG@10", "--margin", "0.03", "--alpha", "0.1", "--bootstrap", "0", "--json"])
    tost = json.loads(capsys.readouterr().out)["systems"][0]["tost"]
    from rankdistill.evaluation import read_per_query

    a = read_per_query(pq["dl19/rm3"])["nDCG@10"]
    b = read_per_query(pq["dl19/bm25"])["nDCG@10"]
    q = sorted(a)
    p, (_, pv1, _), (_, pv2, _) = ttost_paired(np.array([a[k] for k in q]), np.array([b[k] for k in q]), -0.03, 0.03)
    assert tost["p_tost"] == pytest.approx(p, rel=1e-9)
    assert (tost["p_lower"], tost["p_upper"]) == (pytest.approx(pv1, rel=1e-9), pytest.approx(pv2, rel=1e-9))
    assert tost["ci_level"] == pytest.approx(0.8)


def test_compare_text_table_and_determinism(pq, capsys, tmp_path):
    args = ["compare", "--per-query", *_files(pq, names=("bm25", "rm3", "splade")), "--metric", "nDCG@10",
            "--margin-rel", "0.1", "--bootstrap", "500", "--seed", "3"]
    assert main([*args, "--output", str(tmp_path / "a.json")]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["system", "n", "nDCG@10", "diff"]
    assert lines[2].startswith("dl19.bm25 (baseline)")
    assert "TOST margin 0.0505831 (0.1 x baseline mean)" in text
    assert "not transitive" in text
    assert main([*args, "--output", str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out == text
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_missing_queries_are_reported(pq, tmp_path, capsys):
    lines = pq["dl19/rm3"].read_text().splitlines()
    dropped = {ln.split("\t")[0] for ln in lines[1:4]}
    short = tmp_path / "rm3-short.tsv"
    short.write_text("\n".join(ln for ln in lines if ln.split("\t")[0] not in dropped) + "\n")
    base = ["compare", "--per-query", str(pq["dl19/bm25"]), str(short), str(pq["dl19/splade"]), "--metric",
            "nDCG@10", "--margin", "0.01", "--bootstrap", "0"]
    assert main([*base, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["missing_queries"]["rm3-short"]) == dropped
    assert out["n_queries"] == 43 - len(dropped)
    assert main([*base, "--missing", "zero", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_queries"] == 43
    assert main(base) == 0
    assert f"missing: rm3-short lacks {len(dropped)} queries" in capsys.readouterr().out
    assert main([*base, "--missing", "error"]) == 2
    assert "lacks 3 queries" in capsys.readouterr().err


def test_a_manifest_row_without_a_system_name_is_refused(pq, tmp_path):
    """An empty strategy and loss made the system 'None/None'."""
    from rankdistill.stats.study import read_manifest

    manifest = tmp_path / "study.tsv"
    manifest.write_text(f"path\tstrategy\tloss\tcollection\n{pq['dl19/bm25']}\tbm25\tnone\tdl19\n"
                        f"{pq['dl19/rm3']}\t\tnone\tdl19\n")
    with pytest.raises(UserInputError, match=r"study\.tsv:3: a row needs a system name, or a strategy and a loss "
                                             r"\(it would be system 'None/none'\)"):
        read_manifest(manifest)


def test_study_manifest_tables_and_plots(pq, tmp_path, capsys):
    manifest = tmp_path / "study.tsv"
    rows = ["path\tstrategy\tloss\tcollection\tseed\tcost"]
    for i, (name, _) in enumerate(SYSTEMS.items()):
        for year in ("dl19", "dl20"):
            rows.append(f"{pq[f'{year}/{name}']}\t{name}\tnone\t{year}\t0\t{i + 1}")
    manifest.write_text("\n".join(rows) + "\n")
    md, tex, plots = tmp_path / "t.md", tmp_path / "t.tex", tmp_path / "plots"
    rc = main(["compare", "--manifest", str(manifest), "--metric", "nDCG@10", "--margin", "0.05", "--bootstrap",
               "200", "--table-md", str(md), "--table-latex", str(tex), "--table-metrics", "nDCG@10", "AP(rel=2)",
               "--plot-dir", str(plots), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["collections"]) == {"dl19", "dl20"}
    meta = out["meta_analysis"]["splade/none"]
    assert meta["k"] == 2 and meta["ci_low"] > 0.15
    # the random-effects estimate lies between the two per-collection differences
    effects = meta["effects"]
    assert min(effects) <= meta["estimate"] <= max(effects)
    assert out["over_collections"]["bm25/none"]["mean"] == pytest.approx((0.50583 + 0.47964) / 2, abs=1e-4)
    table = md.read_text()
    assert "| strategy | loss | dl19 nDCG@10 | dl20 nDCG@10 | dl19 AP(rel=2) | dl20 AP(rel=2) |" in table
    splade_row = next(r for r in table.splitlines() if r.startswith("| splade "))
    assert splade_row.count("**") == 8  # best in all four columns
    assert "<sup>" in splade_row and "not transitive" in table
    latex = tex.read_text()
    assert r"\textbf{0.7308}" in latex and r"\multicolumn{2}{c}{dl19}" not in latex
    assert latex.count(r"\multicolumn{1}{c}{dl19}") == 2
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{n}.{e}" for n in ("tost_forest_dl19", "tost_forest_dl20", "cost_vs_effectiveness") for e in ("png", "svg"))
    svg = (plots / "cost_vs_effectiveness.svg").read_text()
    assert "cost (manifest units)" in svg and "nDCG@10 (mean over collections)" in svg
    assert (plots / "tost_forest_dl19.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_over_seeds(tmp_path, capsys):
    # two systems, one collection, two seeds, three queries; values chosen so the arithmetic is exact:
    # A seed 0 (0.2, 0.4, 0.6) mean 0.4; seed 1 (0.4, 0.6, 0.8) mean 0.6 -> mean over seeds 0.5,
    # per-query seed average (0.3, 0.5, 0.7); B seed 0/1 give per-query (0.35, 0.6, 0.75), mean 0.5667.
    vals = {("A", 0): (0.2, 0.4, 0.6), ("A", 1): (0.4, 0.6, 0.8), ("B", 0): (0.3, 0.6, 0.7), ("B", 1): (0.4, 0.6, 0.8)}
    rows = ["path\tsystem\tseed"]
    for (s, seed), v in vals.items():
        f = tmp_path / f"{s}{seed}.tsv"
        f.write_text("query_id\tmeasure\tvalue\n" + "".join(f"q{i}\tnDCG@10\t{x}\n" for i, x in enumerate(v)))
        rows.append(f"{f.name}\t{s}\t{seed}")
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    assert main(["compare", "--manifest", str(tmp_path / "m.tsv"), "--margin", "0.1", "--bootstrap", "0",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    seeds = out["collections"]["default"]["over_seeds"]
    # A: seed means 0.4 and 0.6 -> mean 0.5, sd 0.141421, t_{0.975,1} = 12.7062 -> 0.5 +- 12.7062 * 0.1 = +-1.27062
    assert seeds["A"]["mean"] == pytest.approx(0.5) and seeds["A"]["n"] == 2
    assert seeds["A"]["high"] == pytest.approx(0.5 + 12.706205 * 0.1, abs=1e-5)
    comp = out["collections"]["default"]["comparison"]
    assert comp["means"] == {"A": pytest.approx(0.5), "B": pytest.approx(1.7 / 3)}
    assert comp["systems"][0]["mean_diff"] == pytest.approx(1.7 / 3 - 0.5)
    # within each seed: B - A is (0.1, 0.2, 0.1) in seed 0, mean 0.1333, se 0.0333, 90% interval with 2 df
    # (t 2.92) [0.036, 0.231] across the 0.1 margin: inconclusive; (0, 0, 0) in seed 1: equivalent
    assert out["collections"]["default"]["verdicts_by_seed"] == {"B": {"0": "inconclusive", "1": "equivalent"}}
    assert out["collections"]["default"]["diffs_by_seed"] == {"B": {"0": pytest.approx(0.4 / 3), "1": 0.0}}
    assert main(["compare", "--manifest", str(tmp_path / "m.tsv"), "--margin", "0.1", "--bootstrap", "0"]) == 0
    assert ("default      B  seed 0: inconclusive (+0.1333), seed 1: equivalent (+0.0000)"
            in capsys.readouterr().out)


@pytest.mark.parametrize("case", ["measures", "overlap", "margin0", "margin_neg", "margin_inf", "seed", "nan",
                                  "constant", "same_file", "no_margin", "bad_baseline", "one_file"])
def test_bad_input_exits_2(pq, tmp_path, capsys, case):
    a, b = str(pq["dl19/bm25"]), str(pq["dl19/rm3"])
    args = ["--metric", "nDCG@10", "--margin", "0.01"]
    if case == "measures":
        ap_only = tmp_path / "ap.tsv"
        ap_only.write_text("".join(ln + "\n" for ln in Path(b).read_text().splitlines() if "nDCG" not in ln))
        argv, expect = ["--per-query", a, str(ap_only), *args], "no values of measure 'nDCG@10'"
    elif case == "overlap":
        argv, expect = ["--per-query", a, str(pq["dl20/rm3"]), *args], "no query in common"
    elif case == "margin0":
        argv, expect = ["--per-query", a, b, "--margin", "0"], "margin must be a finite number > 0, got 0"
    elif case == "margin_neg":
        argv, expect = ["--per-query", a, b, "--margin-rel", "-0.02"], "relative margin must be a finite number > 0"
    elif case == "margin_inf":
        argv, expect = ["--per-query", a, b, "--margin", "inf"], "margin must be a finite number > 0, got inf"
    elif case == "seed":  # was a ValueError traceback from numpy's generator
        argv, expect = ["--per-query", a, b, *args, "--seed", "-1"], "--seed must be >= 0, got -1 (e.g. --seed 0)"
    elif case == "nan":
        bad = tmp_path / "nan.tsv"
        bad.write_text("query_id\tmeasure\tvalue\nq1\tnDCG@10\t0.5\nq2\tnDCG@10\tnan\n")
        argv, expect = ["--per-query", a, str(bad), *args], "nan.tsv:3: value 'nan' is not finite"
    elif case == "constant":
        const = tmp_path / "const.tsv"
        qids = [ln.split("\t")[0] for ln in Path(a).read_text().splitlines()[1:] if "\tnDCG@10\t" in ln]
        const.write_text("query_id\tmeasure\tvalue\n" + "".join(f"{q}\tnDCG@10\t0.0\n" for q in qids))
        argv, expect = ["--per-query", a, str(const), *args], "the same 0 on all 43 queries"
    elif case == "same_file":
        argv, expect = ["--per-query", a, a, "--names", "x", "y", *args], "identical values on every query"
    elif case == "no_margin":
        argv, expect = ["--per-query", a, b, "--metric", "nDCG@10"], "no equivalence margin given"
    elif case == "bad_baseline":
        argv, expect = ["--per-query", a, b, *args, "--baseline", "nope"], "baseline 'nope' is not one of"
    else:
        argv, expect = ["--per-query", a, *args], "at least two per-query files"
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err
    assert len(err.splitlines()) == 1 and err.startswith("rankdistill compare: error:")
