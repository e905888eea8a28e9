"""The shared mining logic with hand-computed values: seeding, window, exclusions, guard, sampling, the ensemble
filter and reciprocal-rank fusion."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from rankdistill.errors import UserInputError
from rankdistill.mining.base import STRATEGIES, MiningConfig, Strategy, get_strategy, register_strategy
from rankdistill.mining.filters import ensemble_filter
from rankdistill.mining.pool import (
    draw_random,
    exclude,
    false_negative_guard,
    guard_threshold,
    rank_window,
    sample,
)
from rankdistill.mining.seeding import derive_seed, query_rng
from rankdistill.retrieval.fusion import reciprocal_rank_fusion, rrf_scores


def test_query_seed_is_sha256_of_seed_query_and_stream():
    expected = int.from_bytes(hashlib.sha256(b"7\x1fq42\x1fsample").digest()[:16], "big")
    assert derive_seed(7, "q42", "sample") == expected
    a = query_rng(7, "q42", "sample").integers(0, 10**9, size=5)
    b = query_rng(7, "q42", "sample").integers(0, 10**9, size=5)
    assert a.tolist() == b.tolist()
    assert a.tolist() != query_rng(7, "q42", "topup").integers(0, 10**9, size=5).tolist()
    assert a.tolist() != query_rng(8, "q42", "sample").integers(0, 10**9, size=5).tolist()
    # PCG64 seeded with that integer: the stream is a property of the seed, not of the process
    assert a.tolist() == np.random.Generator(np.random.PCG64(expected)).integers(0, 10**9, size=5).tolist()


def test_rank_window_and_exclusions():
    ranking = ["a", "b", "c", "d", "e", "f"]
    assert rank_window(ranking, 2, 4) == ["b", "c", "d"]
    assert rank_window(ranking, 1, None) == ranking
    assert rank_window(ranking, 5, 100) == ["e", "f"]
    assert exclude(["a", "b", "a", "c", "d"], {"c"}) == ["a", "b", "d"]


def test_false_negative_guard_golden():
    # positives score 5 and 3, margin 0.5: threshold = min(5, 3) - 0.5 = 2.5; keep scores <= 2.5
    threshold = guard_threshold([5.0, 3.0], 0.5)
    assert threshold == 2.5
    kept, dropped = false_negative_guard(["x", "y", "z", "w"], {"x": 2.5, "y": 2.6, "z": -1.0, "w": 9.0}, threshold)
    assert (kept, dropped) == (["x", "z"], ["y", "w"])
    with pytest.raises(ValueError):
        guard_threshold([], 0.5)


def test_sample_top_random_and_determinism():
    cands = [f"d{i}" for i in range(10)]
    assert sample(cands, 3, "top", query_rng(0, "q", "s")) == ["d0", "d1", "d2"]
    drawn = sample(cands, 4, "random", query_rng(0, "q", "s"))
    assert len(set(drawn)) == 4 and set(drawn) <= set(cands)
    assert drawn == sample(cands, 4, "random", query_rng(0, "q", "s"))
    # with at most k candidates, random keeps all of them (shuffled)
    assert sorted(sample(cands[:3], 5, "random", query_rng(0, "q", "s"))) == ["d0", "d1", "d2"]
    with pytest.raises(ValueError):
        sample(cands, 2, "best", query_rng(0, "q", "s"))


def test_draw_random_is_uniform_distinct_and_avoids_excluded():
    corpus = [f"d{i}" for i in range(50)]
    excluded = {f"d{i}" for i in range(0, 50, 2)}  # the 25 even ids
    got = draw_random(query_rng(1, "q", "topup"), corpus, 10, excluded)
    assert len(got) == 10 and len(set(got)) == 10 and not set(got) & excluded
    assert got == draw_random(query_rng(1, "q", "topup"), corpus, 10, excluded)
    # asking for more than the corpus holds returns every allowed document once
    assert sorted(draw_random(query_rng(1, "q", "topup"), corpus, 100, excluded)) == sorted(set(corpus) - excluded)
    # uniform: over many queries every allowed document is drawn about equally often (25 docs, 10 per draw)
    counts = dict.fromkeys(sorted(set(corpus) - excluded), 0)
    for i in range(500):
        for d in draw_random(query_rng(0, str(i), "x"), corpus, 10, excluded):
            counts[d] += 1
    assert min(counts.values()) > 140 and max(counts.values()) < 260  # expected 500 * 10 / 25 = 200 each


def test_ensemble_filter_hand_made_example():
    # positives score 5.0 and 3.0, margin 0.5 -> threshold 2.5 (a negative must score <= 2.5)
    systems = [["d1", "d2", "d3", "d4"], ["d3", "d5", "d6", "d1"]]
    scores = {"d1": 4.0, "d2": 2.5, "d3": 1.0, "d4": 0.0, "d5": 2.6, "d6": -1.0}
    # n = 2. System A: d1 (4.0 > 2.5, rejected), d2 (kept, 1), d3 (kept, 2) -> done.
    # System B: d3 (already taken: skipped, not counted), d5 (2.6, rejected), d6 (kept, 1), d1 (rejected).
    assert ensemble_filter(systems, scores, [5.0, 3.0], n=2, margin=0.5) == ["d2", "d3", "d6"]
    # d2 excluded (judged relevant): A takes d3 and d4; B takes d6
    assert ensemble_filter(systems, scores, [5.0, 3.0], n=2, margin=0.5, excluded={"d2"}) == ["d3", "d4", "d6"]
    # n = 1: A takes d2 and stops; d3 was not taken by A, so B takes it
    assert ensemble_filter(systems, scores, [5.0, 3.0], n=1, margin=0.5) == ["d2", "d3"]
    # a larger margin (threshold 3 - 2 = 1.0) keeps only d3 (1.0), d4 (0.0) and d6 (-1.0)
    assert ensemble_filter(systems, scores, [5.0, 3.0], n=10, margin=2.0) == ["d3", "d4", "d6"]


def test_reciprocal_rank_fusion_golden():
    # k = 60: d1 = 1/61 = 0.0163934; d2 = 1/62 + 1/61 = 0.0325224; d3 = 1/62 = 0.0161290
    fused = rrf_scores([["d1", "d2"], ["d2", "d3"]], k=60)
    assert fused == pytest.approx({"d1": 0.0163934, "d2": 0.0325224, "d3": 0.0161290}, abs=1e-7)
    runs = [{"q": {"d1": 9.0, "d2": 3.0, "d9": 1.0}}, {"q": {"d2": 0.9, "d3": 0.1}, "r": {"d7": 1.0}}]
    out = reciprocal_rank_fusion(runs, k=60, depth=2)  # depth 2: d9 (rank 3 of run 1) does not count
    assert out["q"] == pytest.approx(fused)
    assert out["r"] == pytest.approx({"d7": 1 / 61})


def test_registry_and_config_validation():
    assert get_strategy("bm25").name == "bm25"  # also registers the built-in strategies
    assert set(STRATEGIES) >= {"random", "bm25", "dense", "teacher", "ensemble", "run"}
    with pytest.raises(UserInputError, match="unknown strategy 'colbert'; known: bm25, dense, ensemble, random"):
        get_strategy("colbert")

    @register_strategy("unit-test-fixed")
    class Fixed(Strategy):
        def candidates(self, queries):
            return {q.query_id: ["d1"] for q in queries}

    assert get_strategy("unit-test-fixed") is Fixed and Fixed.name == "unit-test-fixed"
    del STRATEGIES["unit-test-fixed"]
    assert MiningConfig("bm25", group_size=16).pool == 32
    with pytest.raises(UserInputError, match="--pool 4 is smaller than group size - 1 = 7"):
        MiningConfig("bm25", group_size=8, pool_size=4).validate()
    with pytest.raises(UserInputError, match="--max-rank 3 is below --min-rank 5"):
        MiningConfig("bm25", group_size=4, min_rank=5, max_rank=3).validate()
    with pytest.raises(UserInputError, match="--group-size must be at least 2"):
        MiningConfig("bm25", group_size=1).validate()



def test_configs_built_in_python_name_a_value_of_the_wrong_type():
    """A string for a number, a float for a count, None for a seed, one string for a tuple: named, instead of
    a TypeError inside numpy ('<' not supported) or a retriever per letter ('unknown retriever b')."""
    from rankdistill.diagnostics.job import DiagnoseConfig
    from rankdistill.retrieval.bm25 import BM25Config
    from rankdistill.retrieval.dense import DenseConfig
    from rankdistill.teachers.models import TeacherConfig

    for make, message in [(lambda: MiningConfig("bm25", group_size="8").validate(),
                           "MiningConfig.group_size must be int, got '8'"),
                          (lambda: MiningConfig("bm25", group_size=8, pool_size=3.5).validate(),
                           "MiningConfig.pool_size must be int or None, got 3.5"),
                          (lambda: MiningConfig("bm25", group_size=8, seed=None).validate(),
                           "MiningConfig.seed must be int, got None"),
                          (lambda: MiningConfig("ensemble", group_size=8, retrievers="bm25").validate(),
                           "MiningConfig.retrievers must be a tuple, not one string: give ('bm25',)"),
                          (lambda: TeacherConfig("m", batch_size="8"), "TeacherConfig.batch_size must be int"),
                          (lambda: DenseConfig(max_length=2.5), "DenseConfig.max_length must be int or None"),
                          (lambda: BM25Config(k1="1.2"), "BM25Config.k1 must be float, got '1.2'"),
                          (lambda: DiagnoseConfig(locality="no"), "DiagnoseConfig.locality must be bool")]:
        with pytest.raises(UserInputError, match=re.escape(message)):
            make()
    MiningConfig("bm25", group_size=np.int64(8), fn_margin=1).validate()  # numpy ints, an int for a float


def test_config_refuses_min_relevance_below_1_and_min_rank_past_the_default_window():
    with pytest.raises(UserInputError) as e:
        MiningConfig("random", group_size=3, min_relevance=0).validate()
    assert str(e.value) == ("--min-relevance must be at least 1, got 0 "
                            "(grade 0 means judged not relevant; give --min-relevance 1 or more)")
    MiningConfig("random", group_size=3, min_relevance=1).validate()
    with pytest.raises(UserInputError) as e:
        MiningConfig("bm25", group_size=4, depth=50, min_rank=100).validate()
    assert str(e.value) == ("--min-rank 100 is past the last rank of the window, 50 (--depth), so no candidate "
                            "would be left (use --min-rank 50 or less, or a larger --depth)")
    MiningConfig("bm25", group_size=4, depth=50, min_rank=50).validate()  # the window's last rank alone
    MiningConfig("bm25", group_size=4, depth=50, min_rank=100, max_rank=120).validate()  # an explicit window
    # unranked candidates (random; the ensemble's filter fusion): a window or --sample top would be ignored
    with pytest.raises(UserInputError) as e:
        MiningConfig("random", group_size=4, depth=50, min_rank=100).validate()
    assert str(e.value) == ("--min-rank applies to a ranking, and --strategy random gives an unordered candidate "
                            "set (sampled uniformly) (leave it out)")
    for kw in ({"min_rank": 2}, {"max_rank": 30}, {"sample": "top"}):
        with pytest.raises(UserInputError, match=r"ensemble with --fusion filter gives an unordered .*--fusion rrf"):
            MiningConfig("ensemble", group_size=4, depth=50, **kw).validate()
    MiningConfig("ensemble", group_size=4, depth=50, min_rank=2, sample="top", fusion="rrf").validate()  # a ranking
    MiningConfig("random", group_size=4, depth=50, sample="random").validate()
    for strategy in ("dense", "run", "ensemble"):
        with pytest.raises(UserInputError, match=r"--min-rank 60 is past the last rank of the window, 50 \(--depth\)"):
            MiningConfig(strategy, group_size=4, depth=50, min_rank=60, candidates="r.trec", fusion="rrf").validate()
    MiningConfig("teacher", group_size=4, depth=200, min_rank=100).validate()
    with pytest.raises(UserInputError, match=r"--min-rank 101 is past the last rank of the window, 100 \(the default "
                                             r"--max-rank of --strategy teacher\)"):
        MiningConfig("teacher", group_size=4, depth=200, min_rank=101).validate()


def test_mining_queries_look_positives_up_in_batches_and_stop_at_max_queries():
    """Each positive was looked up alone (``in``: one ir_datasets docstore fetch each, minutes for MS MARCO's
    500k training queries) and every query of the split was checked before --max-queries cut the list."""
    from types import SimpleNamespace

    from rankdistill.data import docstore
    from rankdistill.mining.miner import mining_queries

    class Corpus:
        def __init__(self) -> None:
            self.asked: list[list[str]] = []

        def known(self, ids):
            self.asked.append(list(ids))
            return np.array([not d.endswith("-gone") for d in ids])

        def __contains__(self, d):
            raise AssertionError("looked up one at a time")

    n = 3000
    queries = {f"q{i}": f"query {i}" for i in range(n)}
    # every third query's only positive is not in the corpus; q1 has a second, lower-graded positive
    qrels = {f"q{i}": {f"d{i}" + ("-gone" if i % 3 == 0 else ""): 2} for i in range(n)}
    qrels["q1"].update({"d1b": 1, "d1n": 0})
    corpus = Corpus()
    ds = SimpleNamespace(queries=lambda split: queries, qrels=lambda split: qrels, rel_threshold=lambda split: 1,
                         corpus=corpus)
    every, counts = mining_queries(ds, "train")
    assert len(every) == n - 1000 and counts == {"queries": n, "queries_without_positives": 1000,
                                                  "positives_not_in_corpus": 1000}
    assert every[0].query_id == "q1" and every[0].positives == ("d1", "d1b")
    assert every[0].excluded == frozenset({"d1", "d1b"})
    corpus.asked.clear()
    first, _ = mining_queries(ds, "train", max_queries=4)
    assert [q.query_id for q in first] == ["q1", "q2", "q4", "q5"]
    assert len(corpus.asked) == 1 and len(corpus.asked[0]) == 1024  # not the whole split (a million ids ahead)
    assert docstore.LOOKUP_BATCH > n + 1
    corpus.asked.clear()
    most, _ = mining_queries(ds, "train", max_queries=600)
    assert len(most) == 600 and [len(a) for a in corpus.asked] == [2400]
