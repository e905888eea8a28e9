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
