"""Every strategy on Cranfield and SciFact train: positives never negatives, pools of the requested size,
determinism; and each strategy's own rule checked against an independent computation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from rankdistill.data import load_dataset, write_run
from rankdistill.data.runs import ranked
from rankdistill.errors import UserInputError
from rankdistill.mining import Miner, MiningConfig, MiningContext, mining_queries
from rankdistill.teachers.engine import CorpusTexts, TeacherScores
from rankdistill.teachers.models import TeacherConfig
from rankdistill.teachers.store import ScoreStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def datasets(cranfield_dir, scifact_dir):
    return {"cranfield": load_dataset(cranfield_dir), "scifact": load_dataset(scifact_dir)}


@pytest.fixture(scope="module")
def emb_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("emb-cache"))


@pytest.fixture(scope="module")
def bm25_runs(datasets, tmp_path_factory):
    """The BM25 top-50 of each dataset's train queries, as a TREC run file (the ``run`` strategy's input)."""
    from rankdistill.retrieval.bm25 import BM25Retriever

    out = {}
    folder = tmp_path_factory.mktemp("runs")
    for name, ds in datasets.items():
        run = BM25Retriever(ds.corpus).search(ds.queries("train"), k=50)
        write_run(run, folder / f"{name}.bm25.trec", tag="bm25")
        out[name] = folder / f"{name}.bm25.trec"
    return out


def _mine(ds, teacher=None, **kw):
    return Miner(MiningContext(MiningConfig(**kw), ds, "train", teacher, show_progress=False)).run()


def _check_groups(ds, result, pool: int | tuple[int, int], max_queries: int | None = None) -> None:
    """``pool``: the size of every pool, or the (least, most) sizes."""
    least, most = (pool, pool) if isinstance(pool, int) else pool
    qrels = ds.qrels("train")
    threshold = ds.rel_threshold("train")
    queries, _ = mining_queries(ds, "train", max_queries=max_queries)
    assert [g.query_id for g in result.groups] == [q.query_id for q in queries]
    for g in result.groups:
        rels = qrels[g.query_id]
        assert g.positive_ids and all(rels[p] >= threshold for p in g.positive_ids)
        assert not set(g.negative_ids) & {d for d, r in rels.items() if r > 0}, g.query_id  # never a positive
        assert len(g.negative_ids) == len(set(g.negative_ids)) and least <= len(g.negative_ids) <= most
        assert all(d in ds.corpus for d in g.negative_ids)
    assert result.counts["groups"] == len(result.groups)


class FakeTeacher:
    """A teacher with known scores: ``score(q, d) = f(q, d)``."""

    teacher_id = "fake"

    def __init__(self, f) -> None:
        self.f = f
        self.asked: list[tuple[str, str]] = []

    def get(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
        pairs = list(pairs)
        self.asked.extend(pairs)
        return {p: self.f(*p) for p in pairs}

    def info(self) -> dict:
        return {"kind": "fake"}

    def close(self) -> None:
        pass


@pytest.mark.parametrize("name", ["cranfield", "scifact"])
@pytest.mark.parametrize("strategy", ["random", "bm25", "dense", "run"])
def test_first_stage_strategies_on_real_data(datasets, emb_cache, bm25_runs, tiny_bert_dir, name, strategy):
    ds = datasets[name]
    kw = dict(strategy=strategy, group_size=4, depth=50, seed=3, encoder=str(tiny_bert_dir),
              embedding_cache=emb_cache, candidates=str(bm25_runs[name]))
    first = _mine(ds, **kw)
    _check_groups(ds, first, pool=8)
    again = _mine(ds, **kw)
    assert [g.to_json() for g in again.groups] == [g.to_json() for g in first.groups]
    other = _mine(ds, **{**kw, "seed": 4})
    assert [g.negative_ids for g in other.groups] != [g.negative_ids for g in first.groups]
    assert all(g.strategy == strategy and g.seed == 3 for g in first.groups)


@pytest.mark.parametrize("name", ["cranfield", "scifact"])
@pytest.mark.parametrize("strategy", ["teacher", "ensemble"])
def test_teacher_strategies_on_real_data(tmp_path, datasets, emb_cache, tiny_cross_encoder_dir, tiny_bert_dir, name,
                                         strategy):
    ds = datasets[name]
    kw = dict(strategy=strategy, group_size=4, depth=20, max_queries=8, ensemble_margin=0.0,
              retrievers=("bm25", "dense") if strategy == "ensemble" else (), encoder=str(tiny_bert_dir),
              embedding_cache=emb_cache)
    texts = CorpusTexts(ds.all_queries("train"), ds.corpus)
    with ScoreStore(tmp_path / "scores.db") as store:
        teacher = TeacherScores(TeacherConfig(str(tiny_cross_encoder_dir), max_length=64, device="cpu"), store, texts,
                                show_progress=False)
        first = _mine(ds, teacher, **kw)
        # the ensemble's union is padded with random documents only to the 3 a group of 4 needs
        _check_groups(ds, first, pool=8 if strategy == "teacher" else (3, 8), max_queries=8)
        scored = sum(r.scored for r in teacher.reports)
        again = _mine(ds, teacher, **kw)
        assert [g.to_json() for g in again.groups] == [g.to_json() for g in first.groups]
        assert sum(r.scored for r in teacher.reports) == scored  # the second run found every score stored
        teacher.close()


def test_bm25_top_and_rank_window_follow_the_bm25_ranking(datasets):
    from rankdistill.retrieval.bm25 import BM25Retriever

    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=20)
    run = BM25Retriever(ds.corpus).search({q.query_id: q.text for q in queries}, k=30)
    result = _mine(ds, strategy="bm25", group_size=4, pool_size=5, depth=30, min_rank=4, max_rank=30, sample="top",
                   max_queries=20)
    for q, g in zip(queries, result.groups):
        window = [d for d, _ in ranked(run[q.query_id])][3:30]
        expected = [d for d in window if d not in q.excluded][:5]
        assert g.negative_ids == expected



def test_bm25_search_in_threads_gives_the_same_run(datasets, monkeypatch):
    """BM25 searched in one thread (hours for MS MARCO's 500k training queries); it now takes the process's
    share of the cores when there are queries enough, with the same run."""
    import torch

    from rankdistill.retrieval import bm25

    ds = datasets["cranfield"]
    queries = dict(ds.queries("train"))
    retriever = bm25.BM25Retriever(ds.corpus)
    threads = []
    real = retriever.index.retrieve
    monkeypatch.setattr(retriever.index, "retrieve", lambda *a, **kw: threads.append(kw["n_threads"]) or real(*a, **kw))
    one = retriever.search(queries, k=50)
    torch.set_num_threads(2)
    two = retriever.search(queries, k=50)
    few = retriever.search(dict(list(queries.items())[:100]), k=50)
    torch.set_num_threads(1)
    assert threads == [1, 2, 1] and len(queries) >= 2 * bm25.MIN_QUERIES_PER_THREAD
    assert one == two and all(few[q] == one[q] for q in few)

def test_dense_negatives_follow_the_exact_inner_product_ranking(datasets, emb_cache, tiny_bert_dir):
    from rankdistill.models.embeddings import encode_texts

    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=10)
    ids = ds.corpus.ids()
    docs = encode_texts([ds.corpus.text(d) for d in ids], str(tiny_bert_dir), cache_dir=emb_cache)
    qv = encode_texts([q.text for q in queries], str(tiny_bert_dir), cache_dir=emb_cache)
    shards = sorted(p.name for p in Path(emb_cache).rglob("shard-*.npy"))
    result = _mine(ds, strategy="dense", group_size=4, pool_size=6, depth=40, sample="top", max_queries=10,
                   encoder=str(tiny_bert_dir), embedding_cache=emb_cache)
    assert sorted(p.name for p in Path(emb_cache).rglob("shard-*.npy")) == shards  # nothing re-encoded
    sims = qv.astype(np.float64) @ docs.astype(np.float64).T
    for i, (q, g) in enumerate(zip(queries, result.groups)):
        order = sorted(range(len(ids)), key=lambda j, i=i: (-round(sims[i, j], 4), ids[j]))[:40]
        top = [ids[j] for j in order if ids[j] not in q.excluded]
        # the first negatives agree with a brute-force ranking (near-ties may swap at float precision)
        assert g.negative_ids[0] == top[0]
        assert len(set(g.negative_ids) & set(top[:8])) >= 5


def test_teacher_strategy_takes_the_teacher_ranking_of_the_bm25_top(tmp_path, datasets, tiny_cross_encoder_dir):
    from rankdistill.retrieval.bm25 import BM25Retriever

    ds = datasets["cranfield"]
    texts = CorpusTexts(ds.all_queries("train"), ds.corpus)
    with ScoreStore(tmp_path / "scores.db") as store:
        teacher = TeacherScores(TeacherConfig(str(tiny_cross_encoder_dir), teacher_id="ce", max_length=64,
                                              device="cpu"), store, texts, show_progress=False)
        result = _mine(ds, teacher, strategy="teacher", group_size=3, pool_size=4, depth=15, sample="top",
                       max_queries=5)
        queries, _ = mining_queries(ds, "train", max_queries=5)
        bm25 = BM25Retriever(ds.corpus).search({q.query_id: q.text for q in queries}, k=15)
        for q, g in zip(queries, result.groups):
            first = list(bm25[q.query_id])
            scores = store.get_many("ce", [(q.query_id, d) for d in first])
            assert len(scores) == len(first)  # every BM25 candidate was scored into the store
            order = sorted(first, key=lambda d, q=q: (-scores[(q.query_id, d)], d))
            assert g.negative_ids == [d for d in order if d not in q.excluded][:4]
        # the teacher's top 100 is cut at --depth 15, and the recorded window says so (it said 100)
        assert result.settings["teacher_top_m"] == 15 and result.settings["max_rank"] == 15
        teacher.close()


def test_false_negative_guard_drops_what_the_teacher_scores_near_the_positives(datasets):
    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=15)
    positives = {q.query_id: set(q.positives) for q in queries}

    # positives score 10; documents whose id ends in 7 score 9.5, within the margin 1 of the positives
    # (threshold 10 - 1 = 9): likely false negatives; every other document scores 0
    def f(q: str, d: str) -> float:
        return 10.0 if d in positives[q] else 9.5 if d.endswith("7") else 0.0

    teacher = FakeTeacher(f)
    kw = dict(strategy="bm25", group_size=4, depth=40, max_queries=15, seed=1)
    plain = _mine(ds, **kw)
    guarded = _mine(ds, teacher, fn_margin=1.0, **kw)
    assert any(d.endswith("7") for g in plain.groups for d in g.negative_ids)
    _check_groups(ds, guarded, pool=8, max_queries=15)  # dropped candidates were replaced (guarded top-ups)
    assert not any(d.endswith("7") for g in guarded.groups for d in g.negative_ids)
    # every candidate the guard saw that ends in 7 was dropped, and nothing else
    seen_sevens = {p for p in teacher.asked if p[1].endswith("7") and p[1] not in positives[p[0]]}
    assert guarded.counts["false_negatives_dropped"] == len(seen_sevens) > 0
    # a teacher that scores every candidate above the positives leaves no negative at all
    with pytest.raises(UserInputError, match="no groups mined: none of the 15 queries kept a negative"):
        _mine(ds, FakeTeacher(lambda q, d: 0.0 if d in positives[q] else 1.0), fn_margin=0.5, **kw)
    with pytest.raises(UserInputError, match="needs a teacher"):
        _mine(ds, fn_margin=1.0, **kw)


def test_pools_still_short_after_the_top_up_are_said(datasets, caplog):
    """A pool larger than the corpus can fill: the top-up warning said the queries were topped up and nothing
    of the groups left below the group size."""
    ds = datasets["cranfield"]
    with caplog.at_level("WARNING", logger="rankdistill.mining.miner"):
        result = _mine(ds, strategy="random", group_size=4, pool_size=5000, max_queries=2)
    assert result.counts["queries_short_after_topup"] == 2
    assert "; 2 of them are still short (too few documents to draw from)" in caplog.text
    assert "fewer than the" not in caplog.text  # every group can still be filled


def test_groups_below_the_group_size_are_said(tmp_path, caplog):
    """A corpus too small for the group size: groups fall short of group_size - 1 negatives and the log says so
    (only the counts recorded it)."""
    ds = load_dataset(_tiny_dataset(tmp_path))
    with caplog.at_level("WARNING", logger="rankdistill.mining.miner"):
        result = _mine(ds, strategy="random", group_size=8, max_queries=2)
    below, groups = result.counts["groups_below_group_size"], result.counts["groups"]
    assert below >= 1
    assert f"{below} of {groups} groups have fewer than the 7 negatives a group of 8 needs" in caplog.text


def test_dense_search_checks_its_arguments(datasets, emb_cache, tiny_bert_dir):
    from rankdistill.retrieval.dense import DenseConfig, DenseRetriever

    ds = datasets["cranfield"]
    dense = DenseRetriever(ds.corpus, DenseConfig(model=str(tiny_bert_dir), cache_dir=emb_cache))
    assert dense.search({"q1": "wing flutter"}, k=0) == {"q1": {}}  # was faiss's bare AssertionError
    with pytest.raises(ValueError, match="k must be >= 0, got -3"):
        dense.search({"q1": "wing flutter"}, k=-3)
    with pytest.raises(TypeError, match="queries must map query ids to texts, got list"):
        dense.search(["wing flutter"], k=3)  # type: ignore[arg-type]
    for kw, message in [({"batch_size": 0}, "batch size must be at least 1, got 0"),
                        ({"max_length": -1}, "token limit must be at least 1, got -1")]:
        with pytest.raises(UserInputError, match=message):
            DenseConfig(model=str(tiny_bert_dir), **kw)
    assert DenseConfig(model=str(tiny_bert_dir), batch_size=np.int64(64)).batch_size == 64  # a numpy count works


def test_a_dense_index_is_read_back_whole_without_reading_the_corpus(datasets, tmp_path, tiny_bert_dir, monkeypatch,
                                                                     caplog):
    """The corpus' embedding matrix is kept beside the model's shards: another process's index (a mining
    worker's) reads it back instead of reading and hashing every document, and searches the same."""
    from rankdistill.models import embeddings
    from rankdistill.retrieval.dense import DenseConfig, DenseRetriever

    ds = datasets["cranfield"]
    config = DenseConfig(model=str(tiny_bert_dir), cache_dir=str(tmp_path / "emb"))
    queries = {"q1": "wing flutter", "q2": "boundary layer transition"}
    first = DenseRetriever(ds.corpus, config).search(queries, k=5)
    assert not list((tmp_path / "emb").glob("*/corpus-*.npy"))  # not asked for: a student's, searched once
    assert DenseRetriever(ds.corpus, config, keep_matrix=True).search(queries, k=5) == first
    [matrix] = list((tmp_path / "emb").glob("*/corpus-*.npy"))
    assert np.load(matrix).shape == (len(ds.corpus), 32)
    embeddings._CACHES.clear()
    monkeypatch.setattr(type(ds.corpus), "iter_docs", lambda self: pytest.fail("the corpus was read again"))
    assert DenseRetriever(ds.corpus, config, keep_matrix=True).search(queries, k=5) == first
    # nor were the corpus' keys indexed (1.3 GB per process for MS MARCO): the queries have a cache of their own
    assert [p.parent.name for p in embeddings._CACHES] == ["queries"]
    # the matrix is mapped, not read, so the processes searching it share its pages; a torch index is moved to
    # its device once, not at every search
    from rankdistill.retrieval import dense

    made, real = [], dense.device_matrix
    monkeypatch.setattr(dense, "device_matrix", lambda docs, device=None: made.append(docs) or real(docs, device))
    index = DenseRetriever(ds.corpus, DenseConfig(model=str(tiny_bert_dir), cache_dir=str(tmp_path / "emb"),
                                                  backend="torch"), keep_matrix=True)
    got = index.search(queries, k=5)
    assert index.search(queries, k=5) == got  # faiss's sums may differ in the last bits
    assert {q: pytest.approx(r, rel=1e-5) for q, r in first.items()} == got
    assert len(made) == 1 and isinstance(made[0].base, np.memmap)
    # a matrix of another length (a stale or foreign file) is not used: it is made again
    np.save(matrix, np.zeros((3, 32), dtype=np.float32))
    monkeypatch.undo()
    assert DenseRetriever(ds.corpus, config, keep_matrix=True).search(queries, k=5) == first
    assert np.load(matrix).shape == (len(ds.corpus), 32)
    # a matrix that cannot be written (a full disk) is a warning, not a failed search
    matrix.unlink()

    def full_disk(*args, **kwargs):  # every vector is in the shards by now: only the matrix is saved
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with caplog.at_level("WARNING", logger="rankdistill.models.embeddings"):
        assert DenseRetriever(ds.corpus, config, keep_matrix=True).search(queries, k=5) == first
    assert "could not keep the corpus' embedding matrix" in caplog.text and "No space left on device" in caplog.text
    assert not matrix.exists()
    monkeypatch.undo()
    # mining's dense first stage keeps it
    import shutil

    shutil.rmtree(tmp_path / "emb")
    _mine(ds, strategy="dense", group_size=4, max_queries=2, encoder=str(tiny_bert_dir),
          embedding_cache=str(tmp_path / "emb"))
    assert len(list((tmp_path / "emb").glob("*/corpus-*.npy"))) == 1


def test_short_queries_are_topped_up_or_skipped(tmp_path, datasets):
    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=6)
    # a sparse run: the first three queries get 2 candidates each, the others none
    sparse = {}
    for q in queries[:3]:
        sparse[q.query_id] = {d: 1.0 / (i + 1) for i, d in enumerate([d for d in ds.corpus.ids()[:40]
                                                                     if d not in q.excluded][:2])}
    write_run(sparse, tmp_path / "sparse.trec")
    kw = dict(strategy="run", candidates=str(tmp_path / "sparse.trec"), group_size=4, max_queries=6)
    topped = _mine(ds, **kw)
    _check_groups(ds, topped, pool=8, max_queries=6)
    for q, g in zip(queries[:3], topped.groups):
        assert set(sparse[q.query_id]) <= set(g.negative_ids)
    c = topped.counts
    assert (c["queries_short"], c["queries_topped_up"], c["random_negatives_added"]) == (6, 6, 3 * 6 + 3 * 8)
    assert c["queries_missing_from_run"] == 3
    skipped = _mine(ds, on_short="skip", **{**kw, "group_size": 2, "pool_size": 2})
    assert [g.query_id for g in skipped.groups] == [q.query_id for q in queries[:3]]
    assert skipped.counts["queries_skipped"] == 3
    with pytest.raises(UserInputError, match="no groups mined: none of the 6 queries kept a negative"):
        _mine(ds, on_short="skip", **kw)


def test_ensemble_filter_keeps_per_system_negatives_the_teacher_scores_low(tmp_path, datasets, bm25_runs):
    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=10)
    # second system: the BM25 run reversed (its worst first)
    from rankdistill.data import read_run

    bm25 = read_run(bm25_runs["cranfield"])
    reverse = {q: {d: -s for d, s in docs.items()} for q, docs in bm25.items()}
    write_run(reverse, tmp_path / "reverse.trec")
    teacher = FakeTeacher(lambda q, d: 5.0 if int(d) % 2 == 0 else 0.0)  # even ids look relevant
    systems = (str(bm25_runs["cranfield"]), str(tmp_path / "reverse.trec"))
    result = _mine(ds, teacher, strategy="ensemble", systems=systems,
                   group_size=4, pool_size=6, depth=50, ensemble_n=2, ensemble_margin=0.5, max_queries=10, seed=0)
    sizes = []
    for q, g in zip(queries, result.groups):
        threshold = min(teacher.f(q.query_id, p) for p in q.positives) - 0.5
        a = [d for d, _ in ranked(bm25[q.query_id])][:50]
        b = [d for d, _ in ranked(reverse[q.query_id])][:50]
        union = []
        for system in (a, b):
            kept = [d for d in system
                    if d not in q.excluded and d not in union and teacher.f(q.query_id, d) <= threshold][:2]
            union += kept
        from_systems = [d for d in g.negative_ids if d in union]
        assert len(from_systems) == min(6, len(union))  # the pool is sampled from the union first ...
        # ... and topped up with random documents only to the 3 a group needs (the paper's "pad with random")
        assert len(g.negative_ids) == max(len(from_systems), 3)
        sizes.append(len(union))
    assert min(sizes) < 3 < max(sizes) < 6  # padded, and a union kept whole in a pool of 6
    assert result.counts["ensemble_negatives_kept"] > 0
    assert result.settings["fusion"] == "filter" and result.settings["n_per_system"] == 2
    with pytest.raises(UserInputError, match="needs a teacher"):
        _mine(ds, strategy="ensemble", systems=(str(bm25_runs["cranfield"]),), group_size=4)
    rrf = _mine(ds, strategy="ensemble", fusion="rrf", systems=systems, group_size=4, pool_size=6, depth=50,
                sample="top", max_queries=10)
    for q, g in zip(queries, rrf.groups):
        a = [d for d, _ in ranked(bm25[q.query_id])][:50]
        b = [d for d, _ in ranked(reverse[q.query_id])][:50]
        fused = {d: 1 / (60 + a.index(d) + 1) + 1 / (60 + b.index(d) + 1) for d in a}
        expected = [d for d in sorted(fused, key=lambda d: (-fused[d], d)) if d not in q.excluded][:6]
        assert g.negative_ids == expected



@pytest.mark.parametrize("strategy", ["run", "ensemble", "bm25"])
def test_mining_in_blocks_of_queries_gives_the_same_groups_and_counts(tmp_path, datasets, bm25_runs, monkeypatch,
                                                                      strategy):
    """All queries were mined at once: MS MARCO's BM25 top-200 with its teacher scores is 100M pairs in memory.
    Blocks of queries give the same groups and counts (every step is per query), with teacher calls and memory
    bounded by the block, and each run file read once."""
    from rankdistill.mining import context, miner

    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=10)
    sparse = {q.query_id: {d: 1.0 / (i + 1) for i, d in enumerate(ds.corpus.ids()[40 + 3 * n:44 + 3 * n])}
              for n, q in enumerate(queries[:7])}  # short pools, and three queries missing from the run
    write_run(sparse, tmp_path / "sparse.trec")
    kw = dict(strategy=strategy, group_size=4, pool_size=6, depth=30, max_queries=10, seed=2, fn_margin=0.5,
              candidates=str(tmp_path / "sparse.trec"), ensemble_n=2,
              systems=(str(bm25_runs["cranfield"]),) if strategy == "ensemble" else ())
    positives = {(q.query_id, d) for q in queries for d in q.positives}

    def f(q: str, d: str) -> float:  # the guard drops every fourth document as a likely false negative
        return 10.0 if (q, d) in positives else 9.8 if int(d) % 4 == 0 else 0.0

    def mine():
        teacher = FakeTeacher(f)
        calls = []
        real_get = teacher.get
        teacher.get = lambda pairs: calls.append(len(pairs := list(pairs))) or real_get(pairs)  # type: ignore
        return _mine(ds, teacher, **kw), calls

    whole, whole_calls = mine()
    reads = []
    real = context.read_checked_run
    monkeypatch.setattr(context, "read_checked_run", lambda *a: reads.append(a[0]) or real(*a))
    monkeypatch.setattr(miner, "MINING_BLOCK", 3)
    blocked, blocked_calls = mine()
    assert [g.to_json() for g in blocked.groups] == [g.to_json() for g in whole.groups]
    assert blocked.counts == whole.counts and blocked.settings == whole.settings
    assert whole.counts["false_negatives_dropped"] > 0 and (strategy == "bm25" or whole.counts["queries_short"] > 0)
    assert len(blocked_calls) > len(whole_calls) and max(blocked_calls) < max(whole_calls)
    assert len(reads) == (0 if strategy == "bm25" else 1)


def test_run_strategy_rejects_unknown_documents_with_file_and_line(tmp_path, datasets):
    ds = datasets["cranfield"]
    bad = tmp_path / "bad.trec"
    bad.write_text("1 Q0 184 1 2.0 x\n1 Q0 nope 2 1.0 x\n")
    with pytest.raises(UserInputError, match=r"bad\.trec:2: document id 'nope' is not in the corpus"):
        _mine(ds, strategy="run", candidates=str(bad), group_size=4)
    with pytest.raises(UserInputError, match="needs --candidates"):
        _mine(ds, strategy="run", group_size=4)


def test_torch_search_backend_matches_faiss():
    """The torch fallback (used where faiss is not installed, e.g. a GPU machine) returns FAISS's exact top-k."""
    import faiss

    from rankdistill.retrieval.dense import exact_top_k

    rng = np.random.default_rng(3)
    docs = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((37, 16)).astype(np.float32)
    index = faiss.IndexFlatIP(16)
    index.add(docs)
    want_s, want_i = index.search(queries, 10)
    got_s, got_i = exact_top_k(docs, queries, 10, device="cpu", block=8)
    assert got_i.shape == (37, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)
    brute = queries.astype(np.float64) @ docs.astype(np.float64).T
    np.testing.assert_allclose(got_s[:, 0], brute.max(axis=1), rtol=1e-5)



def test_torch_search_bounds_the_score_matrix_by_the_corpus_size(monkeypatch):
    """Blocks of 1,024 queries against MS MARCO's 8.8M passages made a 36 GB score matrix: the block now
    shrinks so that it holds at most SCORE_BLOCK_ELEMENTS scores, with the same results."""
    import torch

    from rankdistill.retrieval import dense

    rng = np.random.default_rng(4)
    docs = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((37, 8)).astype(np.float32)
    want_s, want_i = dense.exact_top_k(docs, queries, 5, device="cpu")
    shapes = []
    real_topk = torch.topk

    def spy(x, *a, **kw):
        shapes.append(tuple(x.shape))
        return real_topk(x, *a, **kw)

    monkeypatch.setattr(torch, "topk", spy)
    monkeypatch.setattr(dense, "SCORE_BLOCK_ELEMENTS", 4 * 500 + 499)
    got_s, got_i = dense.exact_top_k(docs, queries, 5, device="cpu")
    assert max(rows for rows, _ in shapes) == 4 and len(shapes) == 10
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-6, atol=1e-6)  # other block shapes, other rounding

def _tiny_dataset(tmp_path: Path, rel_threshold: int = 1) -> Path:
    """Six documents, two queries; q1 has positives d1 (grade 1) and d3 (grade 0), q2 only d2 (grade 0)."""
    (tmp_path / "c.tsv").write_text("d1\tapple pie\nd2\tbanana bread apple\nd3\tcherry tart apple\n"
                                    "d4\tdate loaf\nd5\telderberry wine apple\nd6\tfig jam\n")
    (tmp_path / "q.tsv").write_text("q1\tapple\nq2\tbanana\n")
    (tmp_path / "r.txt").write_text("q1 0 d3 0\nq1 0 d1 1\nq2 0 d2 0\n")
    manifest = tmp_path / "d.toml"
    manifest.write_text(f'name = "tiny"\ncorpus = "c.tsv"\n[splits.train]\nqueries = "q.tsv"\nqrels = "r.txt"\n'
                        f"rel_threshold = {rel_threshold}\n")
    return manifest


@pytest.mark.parametrize("strategy", ["random", "bm25"])
def test_a_positive_is_never_a_negative_even_at_grade_0(tmp_path, monkeypatch, strategy):
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    ds = load_dataset(_tiny_dataset(tmp_path, rel_threshold=0))  # a manifest may make grade 0 a positive
    queries, _ = mining_queries(ds, "train")
    assert [(q.query_id, q.positives, q.excluded) for q in queries] == [
        ("q1", ("d1", "d3"), frozenset({"d1", "d3"})), ("q2", ("d2",), frozenset({"d2"}))]
    for seed in range(8):
        result = _mine(ds, strategy=strategy, group_size=3, pool_size=5, seed=seed)
        negatives = {g.query_id: sorted(g.negative_ids) for g in result.groups}
        assert negatives == {"q1": ["d2", "d4", "d5", "d6"], "q2": ["d1", "d3", "d4", "d5", "d6"]}, seed


@pytest.mark.parametrize(("extra", "message"), [
    (["--strategy", "random", "--min-relevance", "0"],
     "--min-relevance must be at least 1, got 0 (grade 0 means judged not relevant; give --min-relevance 1 or more)"),
    (["--strategy", "bm25", "--depth", "50", "--min-rank", "100"],
     "--min-rank 100 is past the last rank of the window, 50 (--depth), so no candidate would be left "
     "(use --min-rank 50 or less, or a larger --depth)"),
    (["--strategy", "teacher", "--min-rank", "101", "--teacher", "no-such-model"],
     "--min-rank 101 is past the last rank of the window, 100 (the default --max-rank of --strategy teacher), so "
     "no candidate would be left (use --min-rank 100 or less, or a larger --max-rank)"),
    (["--strategy", "random", "--sample", "top"],
     "--sample top applies to a ranking, and --strategy random gives an unordered candidate set (sampled "
     "uniformly) (leave it out)"),
    (["--strategy", "ensemble", "--max-rank", "20", "--teacher", "no-such-model"],
     "--max-rank applies to a ranking, and --strategy ensemble with --fusion filter gives an unordered candidate "
     "set (sampled uniformly) (leave it out, or use --fusion rrf)"),
    # the ensemble's settings, given where they would be ignored (they have defaults, so they were not noticed)
    (["--strategy", "bm25", "--fusion", "rrf", "--rrf-k", "10"],
     "--fusion and --rrf-k are only used by --strategy ensemble, not bm25 (leave them out)"),
    (["--strategy", "ensemble", "--rrf-k", "10", "--teacher", "no-such-model"],
     "--rrf-k is only used by the ensemble's other fusion, not --fusion filter (leave it out)"),
    (["--strategy", "bm25", "--cache", "c.db", "--max-length", "7"],
     "--max-length and --cache are for the teacher's scores, and no --teacher is given (leave them out, or give "
     "--teacher MODEL)"),
    (["--strategy", "ensemble", "--fusion", "rrf", "--ensemble-n", "5", "--ensemble-margin", "1"],
     "--ensemble-n and --ensemble-margin are only used by the ensemble's other fusion, not --fusion rrf "
     "(leave them out)"),
])
def test_mine_refuses_min_relevance_below_1_and_min_rank_past_the_window(tmp_path, monkeypatch, capsys, extra,
                                                                          message):
    from rankdistill.cli import main

    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    manifest = _tiny_dataset(tmp_path)
    out = tmp_path / "out" / "groups.jsonl"
    assert main(["mine", "--dataset", str(manifest), "--group-size", "3", "--pool", "5", *extra,
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1] == f"rankdistill mine: error: {message}"
    assert not (tmp_path / "out").exists()


def test_fanned_out_mining_keeps_no_state_between_runs(tmp_path, datasets):
    """A worker cached its miner (dataset, first stage, run files) across tasks, keyed on settings: a run file
    rewritten between two mining runs on the same (Ray) workers gave the old file's negatives, and the index
    stayed in the worker's memory after mining. Each shard now opens what it needs and lets it go."""
    from rankdistill.experiments.executors import LocalExecutor

    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=20)
    docs = ds.corpus.ids()
    run = tmp_path / "r.trec"
    config = MiningConfig(strategy="run", group_size=3, pool_size=2, candidates=str(run), max_queries=20,
                          on_short="skip")

    def mine(offset: int):
        write_run({q.query_id: {docs[offset + j]: 9.0 - j for j in range(6)} for q in queries}, run)
        return Miner(MiningContext(config, ds, "train", None, show_progress=False), executor=LocalExecutor()).run()

    for offset in (100, 300):  # the same process each time, the run file rewritten in between; 20 queries in
        # shards of ceil(20 / 16) = 2
        fanned, here = mine(offset), _mine(ds, **config.to_dict())
        assert fanned.shards == 10 and [g.to_json() for g in fanned.groups] == [g.to_json() for g in here.groups]
        assert {d for g in fanned.groups for d in g.negative_ids} <= set(docs[offset:offset + 6])
    import rankdistill.mining.miner as miner

    module_state = [k for k, v in vars(miner).items() if k[:1] == "_" != k[1:2] and isinstance(v, dict) and v]
    assert not module_state, "a module-level cache outlives the tasks"


def test_fanned_out_tasks_carry_absolute_paths(tmp_path, datasets, monkeypatch):
    """A Ray worker on another node does not run in this process's folder: relative --candidates and corpus
    paths reached it as given."""
    from rankdistill.experiments.executors import LocalExecutor

    seen = []

    class Recording(LocalExecutor):
        def map(self, fn, tasks, on_done=None):
            seen.extend(tasks)
            return super().map(fn, tasks, on_done)

    ds = datasets["cranfield"]
    queries, _ = mining_queries(ds, "train", max_queries=4)
    docs = ds.corpus.ids()
    monkeypatch.chdir(tmp_path)
    write_run({q.query_id: {docs[j]: 1.0 / (j + 1) for j in range(5)} for q in queries}, "r.trec")
    import os

    relative = load_dataset(os.path.relpath(Path(ds.source).absolute(), tmp_path))  # as `--dataset ../../x` gives
    assert not relative.corpus_path.is_absolute()
    config = MiningConfig(strategy="run", group_size=3, pool_size=2, candidates="r.trec", max_queries=4)
    Miner(MiningContext(config, relative, "train", None, show_progress=False), executor=Recording()).run()
    assert seen and all(Path(t[0].candidates).is_absolute() and Path(t[1].corpus_path).is_absolute() for t in seen)
    assert Path(seen[0][0].candidates) == tmp_path / "r.trec"
