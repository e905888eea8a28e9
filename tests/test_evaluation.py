"""Evaluation against published figures and hand-computed values."""

from __future__ import annotations

import math

import pytest

from rankdistill.data import load_dataset
from rankdistill.errors import UserInputError
from rankdistill.evaluation import default_metrics, evaluate_run, parse_metrics, read_per_query, write_per_query


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize(("split", "ndcg"), [("dl19", 0.5058), ("dl20", 0.4796)])
def test_official_bm25_figures_on_trec_dl(trecdl_manifest, split, ndcg):
    ds = load_dataset(trecdl_manifest)
    result = evaluate_run(ds.candidates(split), ds.qrels(split), ["nDCG@10"], ds.rel_threshold(split))
    assert round(result.means["nDCG@10"], 4) == ndcg
    assert result.judged_queries == (43 if split == "dl19" else 54)


def test_binary_measures_take_the_manifest_threshold(trecdl_manifest):
    ds = load_dataset(trecdl_manifest)
    run, qrels = ds.candidates("dl19"), ds.qrels("dl19")
    plain = evaluate_run(run, qrels, ["AP"], rel_threshold=2).means["AP"]
    explicit = evaluate_run(run, qrels, ["AP(rel=2)"], rel_threshold=1).means["AP(rel=2)"]
    loose = evaluate_run(run, qrels, ["AP"], rel_threshold=1).means["AP"]
    assert plain == explicit
    assert loose > plain  # rel>=1 counts more documents relevant, and BM25 finds more of them


def test_default_metrics():
    assert default_metrics(1) == ["nDCG@10"]
    assert default_metrics(2) == ["nDCG@10", "AP(rel=2)", "RR(rel=2)@10", "R(rel=2)@100"]


def test_hand_computed_values_and_missing_queries_score_zero():
    qrels = {"q1": {"a": 2, "b": 0, "c": 1}, "q2": {"x": 1}, "q3": {"y": 1}}
    run = {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"x": 1.0}, "unjudged": {"z": 1.0}}
    res = evaluate_run(run, qrels, ["nDCG@10", "RR@10", "P@2"])
    # q1 (trec_eval's nDCG: linear gain = rel): ranks b=0, a=2, c=1 -> DCG = 2/log2(3) + 1/log2(4);
    # ideal order a, c -> IDCG = 2/log2(2) + 1/log2(3)
    dcg = 2 / math.log2(3) + 1 / 2
    idcg = 2 + 1 / math.log2(3)
    assert res.per_query["nDCG@10"]["q1"] == pytest.approx(dcg / idcg)
    assert res.per_query["nDCG@10"]["q2"] == pytest.approx(1.0)
    assert res.per_query["nDCG@10"]["q3"] == 0.0  # judged, absent from the run
    assert res.means["nDCG@10"] == pytest.approx((dcg / idcg + 1.0) / 3)
    assert res.per_query["RR@10"]["q1"] == pytest.approx(0.5)
    assert res.per_query["P@2"]["q1"] == pytest.approx(0.5)
    assert res.queries_missing_from_run == 1 and res.unjudged_queries_dropped == 1


def test_library_callers_get_the_same_values_or_a_clear_error():
    qrels = {"q1": {"a": 2, "b": 0, "c": 1}, "q2": {"x": 1}}
    run = {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"x": 1.0}}
    want = evaluate_run(run, qrels, ["nDCG@10"]).per_query["nDCG@10"]
    # a bare measure name is one measure, not its characters
    assert evaluate_run(run, qrels, "nDCG@10").per_query["nDCG@10"] == want
    # integer ids (e.g. from a DataFrame) are the same queries and documents
    ints = {1: {10: 3.0, 11: 2.0, 12: 1.0}}
    assert evaluate_run(ints, {1: {11: 2, 10: 0, 12: 1}}, ["nDCG@10"]).per_query["nDCG@10"] == {"1": want["q1"]}
    with pytest.raises(TypeError, match=r"qrels must map query ids to \{doc_id: relevance\}, got dict of list"):
        evaluate_run(run, {q: list(d) for q, d in qrels.items()}, ["nDCG@10"])
    # a path, not its contents; the arguments swapped (a run's scores as grades scored a perfect 1.0)
    with pytest.raises(TypeError, match=r"run is a path \(r.trec\); read it first with rankdistill.data.read_run"):
        evaluate_run("r.trec", qrels, ["nDCG@10"])  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match=r"the qrels hold a relevance of 3.5 \(query q1, document b\); "
                                             r"relevance grades are integers \(check that the run comes first"):
        evaluate_run(qrels, {"q1": {"b": 3.5, "a": 2.0}}, ["nDCG@10"])
    assert evaluate_run(run, {"q1": {"a": 2.0, "b": "0", "c": True}}, ["nDCG@10"]).per_query["nDCG@10"] == {
        "q1": want["q1"]}  # whole grades of other types are still grades
    # a NaN score would be ranked anywhere by ir_measures and the query scored regardless
    with pytest.raises(UserInputError, match=r"1 NaN score\(s\) on judged queries, e.g. query q1 document b"):
        evaluate_run({**run, "q1": {**run["q1"], "b": math.nan}}, qrels, ["nDCG@10"])


def test_unknown_documents_are_counted_and_evaluated(caplog):
    qrels = {"q1": {"a": 1}}
    res = evaluate_run({"q1": {"ghost": 2.0, "a": 1.0}}, qrels, ["RR@10"], corpus={"a"})
    assert res.unknown_docs == 1
    assert res.means["RR@10"] == pytest.approx(0.5)


def test_per_query_file_round_trip(tmp_path):
    pq = {"nDCG@10": {"2": 0.25, "10": 1.0}, "AP": {"2": 0.5, "10": 0.125}}
    write_per_query(pq, tmp_path / "pq.tsv")
    lines = (tmp_path / "pq.tsv").read_text().splitlines()
    assert lines[0] == "query_id\tmeasure\tvalue"
    assert lines[1] == "10\tnDCG@10\t1.0"
    assert read_per_query(tmp_path / "pq.tsv") == pq


def test_unknown_measure_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown measure"):
        parse_metrics(["nDCG@ten"])


@pytest.mark.parametrize(("row", "message"), [("q1\tnDCG@10\tnan", "not finite"),
                                              ("q0\tnDCG@10\t0.5", "second nDCG@10 value")])
def test_per_query_reader_rejects_nan_and_repeats(tmp_path, row, message):
    p = tmp_path / "pq.tsv"
    p.write_text(f"query_id\tmeasure\tvalue\nq0\tnDCG@10\t0.25\n{row}\n")
    with pytest.raises(UserInputError, match=message) as e:
        read_per_query(p)
    assert f"{p}:3:" in str(e.value)


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    write_per_query({"nDCG@10": {"q": 1.0}}, tmp_path / "pq.tsv")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "pq.tsv").stat().st_mode) == 0o666 & ~mask


# --- two names for one measure, measures without rel=, runs that share no query with the qrels ---------------


def test_two_names_for_one_measure_both_get_its_value():
    # q1: a (rel 1) at rank 1, b (rel 2) at rank 2. At rel>=2 only b is relevant: AP = 1/2 (precision 1/2 at
    # rank 2). At rel>=1 both are: AP = (1/1 + 2/2) / 2 = 1.
    qrels = {"q1": {"a": 1, "b": 2}}
    run = {"q1": {"a": 2.0, "b": 1.0}}
    res = evaluate_run(run, qrels, ["AP", "AP(rel=2)", "AP(rel=1)"], rel_threshold=2)
    assert res.means == {"AP": 0.5, "AP(rel=2)": 0.5, "AP(rel=1)": 1.0}
    assert res.per_query["AP"] == res.per_query["AP(rel=2)"] == {"q1": 0.5}
    res = evaluate_run(run, qrels, ["AP", "AP(rel=1)"], rel_threshold=1)  # cranfield-like: threshold 1
    assert res.means == {"AP": 1.0, "AP(rel=1)": 1.0}


def test_cli_two_names_for_one_measure_on_trec_dl(trecdl_manifest, shared_data, capsys):
    import json

    from rankdistill.cli import main

    run = shared_data / "trec-dl" / "runs" / "run.dl19.bm25.top100.trec"
    args = ["evaluate", "--dataset", str(trecdl_manifest), "--split", "dl19", "--run", str(run), "--json"]
    assert main([*args, "--metrics", "nDCG@10", "AP(rel=2)"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert round(alone["nDCG@10"], 4) == 0.5058
    assert main([*args, "--metrics", "AP", "AP(rel=2)", "nDCG@10"]) == 0
    means = json.loads(capsys.readouterr().out)
    assert means["AP"] == means["AP(rel=2)"] == alone["AP(rel=2)"] > 0.2
    assert round(means["nDCG@10"], 4) == 0.5058


def test_threshold_only_goes_to_measures_that_take_rel():
    got = [str(m) for m in parse_metrics(["NumQ", "Compat", "nDCG@10", "ERR@10", "AP", "RR@10", "NumRelRet",
                                          "P(rel=1)@5"], rel_threshold=2)]
    assert got == ["NumQ", "Compat", "nDCG@10", "ERR@10", "AP(rel=2)", "RR(rel=2)@10", "NumRet(rel=2)", "P@5"]


def test_measures_without_rel_evaluate_on_graded_qrels(trecdl_manifest):
    ds = load_dataset(trecdl_manifest)
    res = evaluate_run(ds.candidates("dl19"), ds.qrels("dl19"), ["nDCG@10", "NumQ", "Compat"],
                       ds.rel_threshold("dl19"))
    assert round(res.means["nDCG@10"], 4) == 0.5058
    assert res.means["NumQ"] == 1.0  # 1 for every judged query
    assert 0 < res.means["Compat"] < 1


@pytest.mark.parametrize(("name", "threshold", "message"), [
    ("SDCG@10", 2, "needs the parameter max_rel"),
    ("NERR10@10", 2, "has no parameter cutoff"),
    ("NumQ(rel=2)", 1, "has no parameter rel"),
    ("AP(rel=2.5)", 1, "invalid value 2.5 for rel"),
    ("NumRel", 2, r"read as NumRel\(rel=2\) .* e\.g\. NumRel\(rel=1\)"),
    ("RBP", 1, "'RBP' is not computed by any"),
    ("alpha_nDCG@10", 1, r"pip install ir-measures\[pyndeval\]"),
    ("P@0", 1, r"'P@0': the cutoff must be a whole number of at least 1, got 0 \(e\.g\. P@10\)"),  # trec_eval aborts
    ("nDCG@0", 1, "the cutoff must be a whole number of at least 1"),
])
def test_measures_that_cannot_be_computed_are_user_errors(name, threshold, message):
    with pytest.raises(UserInputError, match=message) as e:
        evaluate_run({"q1": {"a": 1.0}}, {"q1": {"a": 2}}, ["nDCG@10", name], rel_threshold=threshold)
    assert "\n" not in str(e.value)


def _cli_error(capsys, argv) -> str:
    from rankdistill.cli import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err.strip().splitlines()[-1]


@pytest.mark.parametrize(("dataset", "split", "run", "metrics", "message"), [
    ("trec-dl/dataset.toml", "dl19", "run.dl19.bm25.top100.trec", ["nDCG@10", "SDCG@10"], "'SDCG@10' needs"),
    ("trec-dl/dataset.toml", "dl19", "run.dl19.bm25.top100.trec", ["NumRel"], "NumRel(rel=1)"),
    ("cranfield", "test", "run.dl19.bm25.top100.trec", ["RBP"], "'RBP' is not computed by any"),
    ("trec-dl/dataset.toml", "dl19", "run.dl19.bm25.top100.trec", ["AP@0"], "'AP@0': the cutoff must be"),
])
def test_cli_bad_measure_exit_2(shared_data, capsys, dataset, split, run, metrics, message):
    argv = ["evaluate", "--dataset", str(shared_data / dataset), "--split", split, "--run",
            str(shared_data / "trec-dl" / "runs" / run), "--metrics", *metrics]
    assert message in _cli_error(capsys, argv)


def test_run_sharing_no_query_with_the_split_is_a_user_error(trecdl_manifest, shared_data, tmp_path, capsys):
    ds = load_dataset(trecdl_manifest)
    with pytest.raises(UserInputError, match="no judged query of split 'dl19' is in the run"):
        evaluate_run(ds.candidates("dl20"), ds.qrels("dl19"), ["nDCG@10"], 2, split="dl19")
    with pytest.raises(UserInputError, match="the run holds no results"):
        evaluate_run({}, ds.qrels("dl19"), ["nDCG@10"], 2)
    with pytest.raises(UserInputError, match="the qrels of split 'dl19' hold no judgements"):  # a header-only file
        evaluate_run(ds.candidates("dl19"), {}, ["nDCG@10"], 2, split="dl19")
    dl20 = shared_data / "trec-dl" / "runs" / "run.dl20.bm25.top100.trec"
    args = ["evaluate", "--dataset", str(trecdl_manifest), "--split", "dl19", "--json", "--run"]
    line = _cli_error(capsys, [*args, str(dl20)])
    assert line.startswith(f"rankdistill evaluate: error: {dl20}: no judged query of split 'dl19' is in the run")
    (tmp_path / "empty.trec").write_text("")
    assert f"{tmp_path / 'empty.trec'}: the run holds no results" in _cli_error(capsys,
                                                                               [*args, str(tmp_path / "empty.trec")])


def test_run_covering_some_judged_queries_scores_the_others_zero(trecdl_manifest):
    ds = load_dataset(trecdl_manifest)
    run, qrels = ds.candidates("dl19"), ds.qrels("dl19")
    full = evaluate_run(run, qrels, ["nDCG@10"], 2).per_query["nDCG@10"]
    kept = sorted(full)[:10]
    part = evaluate_run({q: run[q] for q in kept}, qrels, ["nDCG@10"], 2)
    assert part.queries_missing_from_run == 33 and part.judged_queries == 43
    assert part.per_query["nDCG@10"] == {q: (full[q] if q in kept else 0.0) for q in full}
    assert part.means["nDCG@10"] == pytest.approx(sum(full[q] for q in kept) / 43)


def test_empty_entries_and_numpy_grades():
    """Found by mutation: a run entry without documents counted as present, a qrels entry without judgements
    as judged, and a numpy grade (from a DataFrame) was not made an int (ir_measures then raised TypeError)."""
    import numpy as np

    r = evaluate_run({"q1": {"a": 1.0}, "q2": {}}, {"q1": {"a": 1}, "q2": {"x": 1}}, ["RR@10"])
    assert r.queries_missing_from_run == 1
    r = evaluate_run({"q1": {"a": 1.0}}, {"q1": {"a": 1}, "q2": {}}, ["RR@10"])
    assert r.judged_queries == 1 and r.means == {"RR@10": 1.0}  # q2 judges nothing: not a 0 in the mean
    r = evaluate_run({"q1": {"b": 3.0, "a": 2.0}}, {"q1": {"a": np.int64(2), "b": 0}}, ["nDCG@10"])
    assert r.means["nDCG@10"] == pytest.approx(1 / math.log2(3))  # the relevant document at rank 2
