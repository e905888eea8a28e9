"""The diagnose job on hand-made groups (golden values, skip reasons) and query selections."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankdistill.data.groups import Group, read_groups, write_groups
from rankdistill.diagnostics.job import DiagnoseConfig, column_names, diagnose_groups, group_documents
from rankdistill.diagnostics.selections import (
    SELECTIONS,
    get_selection,
    keep_quantile_band,
    select_band,
    select_groups,
    sidecar_path,
)
from rankdistill.errors import UserInputError

LN2, LN3 = math.log(2), math.log(3)

VECTORS = {"query one": (1.0, 0.0), "P1": (0.0, 1.0), "N1": (-1.0, 0.0), "N2": (1.0, 0.0), "query four": (0.0, 1.0)}


def fake_embed(texts):
    return np.array([VECTORS[t] for t in texts], dtype=np.float32)


GROUPS = [
    Group("q1", ["p1"], ["n1", "n2"], "bm25"),
    Group("q2", ["p1"], [], "bm25"),                 # one document: skipped
    Group("q3", ["p1"], ["n1", "n9"], "bm25"),       # n9 has no teacher score: skipped
    Group("q4", [], ["n1", "n2"], "bm25"),           # no positive: positive statistics missing
    Group("q5", ["p1"], ["p1", "n1", "n1"], "bm25"),  # repeats and the positive among negatives: (p1, n1)
]
SCORES = {("q1", "p1"): LN3, ("q1", "n1"): LN2, ("q1", "n2"): 0.0, ("q2", "p1"): 1.0, ("q3", "p1"): 1.0,
          ("q3", "n1"): 0.5, ("q4", "n1"): 0.3, ("q4", "n2"): 0.3, ("q5", "p1"): 0.0, ("q5", "n1"): LN3}


def _run(config=None, **kw):
    config = config or DiagnoseConfig(encoder="unused")
    return diagnose_groups(GROUPS, SCORES, config, query_texts={"q1": "query one", "q4": "query four",
                                                                "q5": "query one"},
                           doc_text={"p1": "P1", "n1": "N1", "n2": "N2"}.get, embed=fake_embed, progress=False, **kw)


def test_group_documents():
    assert group_documents(GROUPS[4], None) == (["p1", "n1"], 1)
    assert group_documents(Group("q", ["a", "b"], ["c", "d", "e"]), 3) == (["a", "b", "c", "d"], 2)


def test_golden_row_and_skips():
    res = _run()
    frame = res.frame.set_index("query_id")
    assert list(frame.index) == ["q1", "q4", "q5"]
    assert res.skipped == {"one document (entropy undefined)": 1, "missing teacher scores": 1}
    assert res.skipped_examples["missing teacher scores"] == ["q3"]
    q1 = frame.loc["q1"]
    # p = softmax(ln3, ln2, 0) = (3, 2, 1)/6: H = 1/6 ln 6 + 1/3 ln 3 + 1/2 ln 2 = 1.011404; / ln 3 = 0.920620
    assert q1["softmax_entropy_nats_T1_with_pos"] == pytest.approx(1.011404, abs=1e-6)
    assert q1["softmax_entropy_norm_T1_with_pos"] == pytest.approx(0.920620, abs=1e-6)
    # negatives only: p = (2, 1)/3: H = 2/3 ln(3/2) + 1/3 ln 3 = 0.636514 nats = 0.918296 of ln 2;
    # pairwise: h2(sigmoid(ln 2)) = h2(2/3) = 0.918296 bits
    assert q1["softmax_entropy_nats_T1_no_pos"] == pytest.approx(0.636514, abs=1e-6)
    assert q1["softmax_entropy_norm_T1_no_pos"] == pytest.approx(0.918296, abs=1e-6)
    assert q1["pairwise_entropy_bits_T1_no_pos"] == pytest.approx(0.918296, abs=1e-6)
    # scores (1.098612, 0.693147, 0): mean 0.597253, population std sqrt(0.617268 / 3) = 0.453603
    assert q1["score_std"] == pytest.approx(0.453603, abs=1e-6)
    assert q1["score_range"] == pytest.approx(LN3)
    assert (q1["positive_rank"], q1["n_negatives_above_positive"]) == (1, 0)
    assert q1["kappa_T1"] == pytest.approx(2.0)  # 1 / (3 * 1/6)
    # embeddings p1 (0,1), n1 (-1,0), n2 (1,0), query (1,0): cosine distances p1-n1 1, p1-n2 1, n1-n2 2
    # -> q95 of (1, 1, 2) = 1.9; negatives to query (2 + 0)/2 = 1; negatives to positive (1 + 1)/2 = 1
    assert q1["diameter_q95_cosine"] == pytest.approx(1.9)
    assert q1["mean_dist_neg_query_cosine"] == pytest.approx(1.0)
    assert q1["mean_dist_neg_pos_cosine"] == pytest.approx(1.0)
    assert q1["mean_dist_pos_query_cosine"] == pytest.approx(1.0)
    q4 = frame.loc["q4"]  # constant scores, no positive: H = ln 2 (maximal), rank missing
    assert q4["softmax_entropy_nats_T1_with_pos"] == pytest.approx(LN2)
    assert pd.isna(q4["positive_rank"]) and math.isnan(frame.loc["q4", "mean_dist_neg_pos_cosine"])
    q5 = frame.loc["q5"]  # (p1 = 0, n1 = ln 3): the negative outranks the positive; one negative: no_pos NaN
    assert (q5["n_docs"], q5["positive_rank"], q5["n_negatives_above_positive"]) == (2, 2, 1)
    assert math.isnan(frame.loc["q5", "softmax_entropy_nats_T1_no_pos"])
    assert list(res.frame.columns) == ["query_id", *column_names(DiagnoseConfig())]


def test_teacher_scores_may_be_given_as_a_run():
    """A run ``{query: {doc: score}}`` (what ScoreStore.scores gives) is the same scores; every group used to be
    skipped as 'missing teacher scores'."""
    nested: dict = {}
    for (q, d), s in SCORES.items():
        nested.setdefault(q, {})[d] = s
    config = DiagnoseConfig(locality=False)
    flat = diagnose_groups(GROUPS, SCORES, config, progress=False)
    as_run = diagnose_groups(GROUPS, nested, config, progress=False)
    pd.testing.assert_frame_equal(flat.frame, as_run.frame)
    assert as_run.skipped == flat.skipped and len(as_run.frame) == 3
    with pytest.raises(TypeError, match="teacher_scores must map"):
        diagnose_groups(GROUPS, {"q1": 1.0}, config, progress=False)


def test_chunked_embedding_gives_the_same_rows():
    calls = []

    def counting_embed(texts):
        calls.append(len(texts))
        return fake_embed(texts)

    whole = _run()
    chunked = diagnose_groups(GROUPS, SCORES, DiagnoseConfig(encoder="unused"),
                              query_texts={"q1": "query one", "q4": "query four", "q5": "query one"},
                              doc_text={"p1": "P1", "n1": "N1", "n2": "N2"}.get, embed=counting_embed,
                              progress=False, chunk_size=1)
    pd.testing.assert_frame_equal(whole.frame, chunked.frame)
    assert calls == [1, 3, 1, 2, 1, 2]  # per group: its query, then its distinct documents


def test_variant_names_follow_settings():
    config = DiagnoseConfig(temperature=0.5, alpha=0.9, metric="l2", encoder="unused")
    res = _run(config)
    cols = set(res.frame.columns)
    assert {"softmax_entropy_nats_T0.5_with_pos", "kappa_T0.5", "diameter_q90_l2", "mean_dist_neg_query_l2"} <= cols
    # T = 0.5 on (ln3, ln2, 0) is T = 1 on (2 ln3, 2 ln2, 0): p = (9, 4, 1)/14, kappa = 14 / (3 * 1) = 4.666667
    q1 = res.frame.set_index("query_id").loc["q1"]
    assert q1["kappa_T0.5"] == pytest.approx(14 / 3)
    # L2: distances sqrt2, sqrt2, 2 -> q90 = sqrt2 + 0.8 (2 - sqrt2)
    assert q1["diameter_q90_l2"] == pytest.approx(math.sqrt(2) + 0.8 * (2 - math.sqrt(2)))
    no_loc = _run(DiagnoseConfig(locality=False, group_size=2))
    assert not any(c.startswith(("diameter", "mean_dist")) for c in no_loc.frame.columns)
    assert no_loc.frame.set_index("query_id").loc["q1", "n_docs"] == 2  # positive + first G-1 = 1 negative


def test_missing_text_is_skipped():
    res = diagnose_groups(GROUPS[:1], SCORES, DiagnoseConfig(encoder="unused"), query_texts={},
                          doc_text=lambda d: "P1", embed=fake_embed, progress=False)
    assert res.frame.empty and res.skipped == {"query text not found in the dataset": 1}


def test_locality_takes_its_texts_from_a_dataset_and_embeds_with_the_configs_encoder(cranfield_dir, tiny_bert_dir,
                                                                                       tmp_path, monkeypatch):
    """A Python caller had to build query_texts, doc_text and an embedder (a bare ValueError otherwise), though
    the config names the encoder."""
    from rankdistill.data import load_dataset

    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    ds = load_dataset(cranfield_dir)
    qrels = ds.qrels("train")
    docs = ds.corpus.ids()[:40]
    groups = [Group(q, sorted(qrels[q])[:1], [d for d in docs if d not in qrels[q]][:5], "x")
              for q in sorted(qrels, key=int)[:4]]
    scores = {(g.query_id, d): float(i) for g in groups for i, d in enumerate((*g.positive_ids, *g.negative_ids))}
    config = DiagnoseConfig(encoder=str(tiny_bert_dir), cache_dir=str(tmp_path / "emb"))
    with pytest.raises(UserInputError, match="the locality statistics need the queries' and documents' texts"):
        diagnose_groups(groups, scores, config, progress=False)
    got = diagnose_groups(groups, scores, config, dataset=ds, progress=False).frame
    from rankdistill.models import encode_texts

    queries = ds.all_queries("train")
    want = diagnose_groups(groups, scores, config, query_texts=queries, doc_text=ds.corpus.text,
                           embed=lambda t: encode_texts(t, model=str(tiny_bert_dir), cache_dir=False),
                           progress=False).frame
    assert len(got) == 4 and got.filter(like="diameter").notna().all().all()
    pd.testing.assert_frame_equal(got, want, rtol=1e-5)
    assert diagnose_groups(groups, scores, config, dataset=str(cranfield_dir), progress=False).frame.equals(got)


def test_config_validation():
    for kw in ({"temperature": 0}, {"alpha": 0.0}, {"alpha": 1.5}, {"metric": "dot"}, {"group_size": 1}):
        with pytest.raises(UserInputError):
            DiagnoseConfig(**kw)


# --- selections ------------------------------------------------------------------------------------------

def test_selection_golden():
    # values 1..8: linear quantiles q25 = 1 + 0.25 * 7 = 2.75, median 4.5, q75 = 6.25
    values = {f"q{i}": float(i) for i in range(1, 9)}
    kept = {name: select_band(values, SELECTIONS[name]).kept for name in SELECTIONS}
    assert kept["keep_lower_quartile"] == ("q1", "q2")
    assert kept["keep_second_quartile"] == ("q3", "q4")
    assert kept["keep_third_quartile"] == ("q5", "q6")
    assert kept["keep_upper_quartile"] == ("q7", "q8")
    assert kept["drop_upper_quartile"] == tuple(f"q{i}" for i in range(1, 7))
    assert kept["drop_lower_quartile"] == tuple(f"q{i}" for i in range(3, 9))
    assert kept["keep_below_median"] == ("q1", "q2", "q3", "q4")
    assert kept["keep_above_median"] == ("q5", "q6", "q7", "q8")
    assert kept["keep_interquartile"] == ("q3", "q4", "q5", "q6")
    out = select_band(values, SELECTIONS["drop_upper_quartile"])
    assert (out.lo_threshold, out.hi_threshold) == (1.0, 6.25)
    band = select_band({**values, "qx": math.nan}, keep_quantile_band(0.25, 0.75))
    assert band.kept == ("q3", "q4", "q5", "q6") and band.n_without_value == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=40))
def test_quartile_bands_partition(values):
    vals = {f"q{i}": v for i, v in enumerate(values)}
    parts = [set(select_band(vals, SELECTIONS[n]).kept)
             for n in ("keep_lower_quartile", "keep_second_quartile", "keep_third_quartile", "keep_upper_quartile")]
    assert set().union(*parts) == set(vals)
    assert sum(len(p) for p in parts) == len(vals)
    below = set(select_band(vals, SELECTIONS["keep_below_median"]).kept)
    above = set(select_band(vals, SELECTIONS["keep_above_median"]).kept)
    assert below.isdisjoint(above) and below | above == set(vals)


def test_get_selection_errors():
    with pytest.raises(UserInputError, match="known: keep_quantile_band"):
        get_selection("upper_quartile")
    with pytest.raises(UserInputError, match="needs both"):
        get_selection("keep_quantile_band", lo=0.1)
    with pytest.raises(UserInputError, match="empty or outside"):
        get_selection("keep_quantile_band", lo=0.8, hi=0.2)
    assert get_selection("keep_quantile_band", 0.1, 0.9).name == "keep_quantile_band(0.1,0.9)"


def test_select_groups_file(tmp_path):
    groups = [Group(f"q{i}", [f"p{i}"], [f"n{i}"], "bm25") for i in range(1, 9)]
    write_groups(groups, tmp_path / "g.jsonl")
    frame = pd.DataFrame({"query_id": [f"q{i}" for i in range(1, 8)], "h": [float(i) for i in range(1, 8)]})
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    meta = select_groups(tmp_path / "g.jsonl", tmp_path / "s.parquet", "h", SELECTIONS["keep_below_median"],
                         tmp_path / "kept.jsonl")
    # q8 has no statistic; values 1..7: median 4 -> keeps q1..q4
    assert [g.query_id for g in read_groups(tmp_path / "kept.jsonl")] == ["q1", "q2", "q3", "q4"]
    side = json.loads(sidecar_path(tmp_path / "kept.jsonl").read_text())
    assert side == meta
    assert (side["n_queries"], side["n_kept"], side["n_without_value"]) == (8, 4, 1)
    assert side["thresholds"]["hi_value"] == 4.0 and side["rule"] == "keep_below_median"
    with pytest.raises(UserInputError, match="no column 'x'; numeric columns: h"):
        select_groups(tmp_path / "g.jsonl", tmp_path / "s.parquet", "x", SELECTIONS["keep_below_median"],
                      tmp_path / "k2.jsonl")
    assert not (tmp_path / "k2.jsonl").exists()
    # a query with two groups (counted twice in "kept 16 of 34 queries") is refused, as diagnose and train do
    write_groups([*groups, groups[2]], tmp_path / "dup.jsonl")
    with pytest.raises(UserInputError, match=r"dup\.jsonl:9: query 'q3' has a second group \(first on line 3\)"):
        select_groups(tmp_path / "dup.jsonl", tmp_path / "s.parquet", "h", SELECTIONS["keep_below_median"],
                      tmp_path / "k3.jsonl")
    assert not (tmp_path / "k3.jsonl").exists()


def test_a_block_whose_every_group_was_skipped_keeps_the_columns_types():
    """A block of groups all skipped has an empty frame of object columns; concatenated with the others it made
    every column object (and the parquet's query ids another string type)."""
    from rankdistill.diagnostics.job import _merge

    whole = _run()
    parts = [diagnose_groups(GROUPS[i:i + 1], SCORES, DiagnoseConfig(encoder="unused"),
                             query_texts={"q1": "query one", "q4": "query four", "q5": "query one"},
                             doc_text={"p1": "P1", "n1": "N1", "n2": "N2"}.get, embed=fake_embed, progress=False)
             for i in range(len(GROUPS))]
    assert parts[1].frame.empty  # q2: one document
    merged = _merge(parts)
    pd.testing.assert_frame_equal(merged.frame, whole.frame)
    assert merged.skipped == whole.skipped and merged.skipped_examples == whole.skipped_examples
