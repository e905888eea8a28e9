"""The scoring engine on real text: unique pairs, caching, identity checks, NaN refusal, ensembles."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch

from rankdistill.data import load_dataset
from rankdistill.errors import UserInputError
from rankdistill.teachers.engine import (
    CorpusTexts,
    EnsembleConfig,
    TeacherScores,
    score_ensemble,
    score_pairs,
    unique_pairs,
)
from rankdistill.teachers.ensemble import mean_z, zstats
from rankdistill.teachers.models import Teacher, TeacherConfig, load_teacher
from rankdistill.teachers.store import ScoreStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cranfield(cranfield_dir):
    ds = load_dataset(cranfield_dir)
    queries = ds.queries("train")
    qids = sorted(queries, key=int)[:4]
    docs = ds.corpus.ids()[:30]
    pairs = [(q, d) for q in qids for d in docs]
    return ds, CorpusTexts(queries, ds.corpus), pairs


def _config(model, **kw) -> TeacherConfig:
    return TeacherConfig(str(model), max_length=64, batch_size=8, device="cpu", **kw)


def test_unique_pairs_keeps_first_seen_order():
    assert unique_pairs([("q1", "d2"), ("q1", "d1"), ("q1", "d2"), (1, 2)]) == [("q1", "d2"), ("q1", "d1"),
                                                                                 ("1", "2")]


def test_score_pairs_scores_unique_missing_pairs_once(tmp_path, cranfield, tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    ds, texts, pairs = cranfield
    teacher = load_teacher(_config(tiny_cross_encoder_dir, teacher_id="tiny"))
    with ScoreStore(tmp_path / "s.db") as store:
        first = score_pairs(teacher, pairs[:50] + pairs[:10], texts, store, chunk_size=16, show_progress=False)
        assert (first.requested, first.cached, first.scored) == (50, 0, 50)
        again = score_pairs(teacher, pairs, texts, store, chunk_size=16, show_progress=False)
        assert (again.requested, again.cached, again.scored) == (120, 50, 70)
        assert store.count("tiny") == 120
        info = store.teacher_info("tiny")
        assert info["score_space"] == "logit" and info["max_length"] == 64 and info["teacher_id"] == "tiny"
        got = store.get_many("tiny", pairs)
    ref = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu", max_length=64).predict(
        [(texts.query(q), ds.corpus.text(d)) for q, d in pairs], activation_fn=torch.nn.Identity())
    assert np.allclose([got[p] for p in pairs], ref, atol=1e-6, rtol=1e-5)


def test_the_teachers_loading_is_timed_apart_from_its_pairs_per_second(tmp_path, cranfield, tiny_cross_encoder_dir,
                                                                      monkeypatch):
    """A cross-encoder teacher loads its weights before the first pair it scores (not when every pair is
    stored), inside score_pairs: the pairs per second it reports leave that loading out."""
    import time

    from rankdistill.teachers import models

    _, texts, pairs = cranfield
    teacher = load_teacher(_config(tiny_cross_encoder_dir, teacher_id="tiny"))
    assert not teacher.loaded
    load = models.CrossEncoderTeacher._load_model

    def slow_load(self):
        time.sleep(0.5)
        return load(self)

    monkeypatch.setattr(models.CrossEncoderTeacher, "_load_model", slow_load)
    with ScoreStore(tmp_path / "s.db") as store:
        first = score_pairs(teacher, pairs[:20], texts, store, chunk_size=8, show_progress=False)
        assert teacher.loaded and first.scored == 20 and first.load_seconds >= 0.5
        assert first.pairs_per_second == pytest.approx(20 / (first.seconds - first.load_seconds))
        teacher.close()
        stored = score_pairs(teacher, pairs[:20], texts, store, chunk_size=8, show_progress=False)
        assert stored.scored == 0 and stored.load_seconds == 0 and not teacher.loaded


def test_scores_are_committed_in_few_transactions_and_kept_when_interrupted(tmp_path, cranfield,
                                                                            tiny_cross_encoder_dir, monkeypatch):
    """Each GPU batch was one SQLite transaction (about 40 us a row); commits now gather COMMIT_ROWS rows or
    COMMIT_SECONDS, and what was scored before an interruption is committed on the way out."""
    from rankdistill.teachers import engine

    _, texts, pairs = cranfield
    teacher = load_teacher(_config(tiny_cross_encoder_dir, teacher_id="tiny"))  # batches of 8
    puts = []
    real_put = ScoreStore.put
    monkeypatch.setattr(ScoreStore, "put", lambda self, t, rows: puts.append(len(rows)) or real_put(self, t, rows))
    monkeypatch.setattr(engine, "COMMIT_ROWS", 40)
    monkeypatch.setattr(engine, "COMMIT_SECONDS", 1e9)
    with ScoreStore(tmp_path / "s.db") as store:
        score_pairs(teacher, pairs, texts, store, chunk_size=16, show_progress=False)
        assert puts == [40, 40, 40] and store.count("tiny") == 120
    puts.clear()
    real_run = type(teacher).run

    batches: list[int] = []

    def stops_at_the_4th_batch(self, prepared):
        for out in real_run(self, prepared):
            batches.append(1)
            if len(batches) == 4:
                raise KeyboardInterrupt
            yield out

    monkeypatch.setattr(type(teacher), "run", stops_at_the_4th_batch)
    with ScoreStore(tmp_path / "t.db") as store:
        with pytest.raises(KeyboardInterrupt):
            score_pairs(teacher, pairs, texts, store, chunk_size=16, show_progress=False)
        assert puts == [24] and store.count("tiny") == 24  # the 3 batches of 8 scored before it
    # a shared store that fails a commit (locked for longer than the timeout): the scores stay pending, and
    # the retry on the way out puts them in both stores before the error is raised
    fails = [1]
    with ScoreStore(tmp_path / "v.db") as store, ScoreStore(tmp_path / "shared.db") as shared:
        def locked_once(self, t, rows):
            if self.path == shared.path and fails:
                fails.pop()
                raise sqlite3.OperationalError("database is locked")
            return real_put(self, t, rows)

        monkeypatch.setattr(ScoreStore, "put", locked_once)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            score_pairs(teacher, pairs, texts, store, chunk_size=16, show_progress=False, cache=shared)
        assert store.count("tiny") == shared.count("tiny") == 40
    monkeypatch.setattr(ScoreStore, "put", lambda self, t, rows: puts.append(len(rows)) or real_put(self, t, rows))
    monkeypatch.setattr(engine, "COMMIT_SECONDS", 0.0)  # at most this long between commits: every batch
    puts.clear()
    monkeypatch.setattr(type(teacher), "run", real_run)
    with ScoreStore(tmp_path / "u.db") as store:
        score_pairs(teacher, pairs, texts, store, chunk_size=16, show_progress=False)
    assert puts == [8] * 15


def test_a_teacher_ids_check_and_record_are_one_transaction(tmp_path, monkeypatch):
    """Two jobs sharing a store could both find an id free and record it with their own settings (bf16 on a
    GPU, float32 on a CPU): their scores then mixed under one id. Another writer now waits for the check."""
    import sqlite3

    from rankdistill.teachers.engine import claim_teacher_id

    tried = []
    with ScoreStore(tmp_path / "s.db") as store:
        real = ScoreStore.has_teacher

        def meanwhile(self, teacher):
            other = sqlite3.connect(tmp_path / "s.db", timeout=0.1)
            try:
                other.execute("INSERT INTO teachers VALUES ('t', '{\"dtype\": \"bfloat16\"}')")
                other.commit()
                tried.append("written")
            except sqlite3.OperationalError as e:
                tried.append(str(e))
            finally:
                other.close()
            return real(self, teacher)

        monkeypatch.setattr(ScoreStore, "has_teacher", meanwhile)
        assert claim_teacher_id(store, "t", {"dtype": "float32"}, {"dtype": "float32"}) == {"dtype": "float32"}
        assert tried == ["database is locked"]
        assert store.teacher_info("t") == {"dtype": "float32"}


def test_a_shared_cache_store_saves_the_work_not_the_result(tmp_path, cranfield, tiny_cross_encoder_dir):
    """Two jobs sharing a cache: the second copies the pairs the first scored, scores only the rest, and its
    own store ends up as without the cache (the same pairs; values equal up to batch-composition rounding)."""
    _, texts, pairs = cranfield
    teacher = load_teacher(_config(tiny_cross_encoder_dir, teacher_id="tiny"))
    with ScoreStore(tmp_path / "cache.db") as cache:
        with ScoreStore(tmp_path / "a.db") as a:
            first = score_pairs(teacher, pairs[:70], texts, a, chunk_size=16, show_progress=False, cache=cache)
        assert (first.requested, first.cached, first.reused, first.scored) == (70, 0, 0, 70)
        assert cache.count("tiny") == 70
        with ScoreStore(tmp_path / "b.db") as b:
            second = score_pairs(teacher, pairs[40:], texts, b, chunk_size=16, show_progress=False, cache=cache)
            assert (second.requested, second.cached, second.reused, second.scored) == (80, 0, 30, 50)
            assert b.count("tiny") == 80 and cache.count("tiny") == 120
            shared = b.get_many("tiny", pairs[40:])
        with ScoreStore(tmp_path / "alone.db") as alone:
            score_pairs(teacher, pairs[40:], texts, alone, chunk_size=16, show_progress=False)
            ref = alone.get_many("tiny", pairs[40:])
    assert ref.keys() == shared.keys()
    assert np.allclose([ref[p] for p in ref], [shared[p] for p in ref], atol=1e-7)


def test_a_teacher_id_made_with_other_settings_is_refused(tmp_path, cranfield, tiny_cross_encoder_dir):
    _, texts, pairs = cranfield
    with ScoreStore(tmp_path / "s.db") as store:
        score_pairs(load_teacher(_config(tiny_cross_encoder_dir)), pairs[:4], texts, store, show_progress=False)
        other = load_teacher(TeacherConfig(str(tiny_cross_encoder_dir), max_length=32, device="cpu"))
        with pytest.raises(UserInputError, match=r"other settings \(max_length: stored 64, now 32\).*--teacher-id"):
            score_pairs(other, pairs[:8], texts, store, show_progress=False)
        assert store.count() == 4
        # the same model in bf16 (the GPU's default) gives other scores than the fp32 ones stored
        bf16 = load_teacher(_config(tiny_cross_encoder_dir, dtype="bfloat16"))
        with pytest.raises(UserInputError, match=r"other settings \(dtype: stored 'float32', now 'bfloat16'\)"):
            score_pairs(bf16, pairs[:8], texts, store, show_progress=False)


def test_the_same_teacher_under_a_new_id_is_pointed_to_its_stored_scores(tmp_path, cranfield, tiny_cross_encoder_dir,
                                                                         monkeypatch, caplog):
    """A teacher's id defaults to its path as typed, so ../teacher and /abs/teacher are two ids: the second
    scores again, and says under which id the same teacher's scores already are (not for another teacher)."""
    import shutil

    _, texts, pairs = cranfield
    shutil.copytree(tiny_cross_encoder_dir, tmp_path / "teacher")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with ScoreStore(tmp_path / "s.db") as store:
        score_pairs(load_teacher(_config("../teacher")), pairs[:4], texts, store, show_progress=False)
        caplog.clear()
        with caplog.at_level("WARNING", logger="rankdistill.teachers.engine"):
            score_pairs(load_teacher(_config(tmp_path / "teacher")), pairs[:4], texts, store, show_progress=False)
        assert (f"teacher id '{tmp_path / 'teacher'}' is new in" in caplog.text
                and "stored there as '../teacher'" in caplog.text and "--teacher-id ../teacher" in caplog.text)
        caplog.clear()
        with caplog.at_level("WARNING", logger="rankdistill.teachers.engine"):  # other settings: another teacher
            short = TeacherConfig("../teacher", teacher_id="short", max_length=32, batch_size=8, device="cpu")
            score_pairs(load_teacher(short), pairs[:4], texts, store, show_progress=False)
        assert "is new in" not in caplog.text


def test_a_teacher_retrained_into_the_same_folder_is_not_served_its_old_scores(tmp_path, cranfield,
                                                                                 tiny_cross_encoder_dir):
    """The store's identity holds a digest of the model's files: the same path with new weights is refused
    (before, the path alone was compared and the old weights' scores were reused silently); a copy of the same
    weights elsewhere is the same teacher as far as the weights go."""
    import json
    import shutil

    from transformers import AutoModelForSequenceClassification

    _, texts, pairs = cranfield
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_cross_encoder_dir, folder)
    with ScoreStore(tmp_path / "s.db") as store:
        score_pairs(load_teacher(_config(folder, teacher_id="t")), pairs[:4], texts, store, show_progress=False)
        before = store.teacher_info("t")["weights"]
        assert len(before) == 32
        torch.manual_seed(1)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        with torch.no_grad():
            model.classifier.weight.add_(1.0)
        model.save_pretrained(folder)
        digests = r"other settings \(weights: stored '[0-9a-f]{32}', now '[0-9a-f]{32}'"
        with pytest.raises(UserInputError, match=digests):
            score_pairs(load_teacher(_config(folder, teacher_id="t")), pairs[:8], texts, store, show_progress=False)
        assert store.count() == 4

        # a store written before the digest was recorded: taken as it is, and the digest recorded from now on
        info = {k: v for k, v in store.teacher_info("t").items() if k != "weights"}
        store.set_teacher_info("t", info)
        score_pairs(load_teacher(_config(folder, teacher_id="t")), pairs[:8], texts, store, show_progress=False)
        now = store.teacher_info("t")["weights"]
        assert now != before and json.dumps(store.teacher_info("t"), sort_keys=True).count(now) == 1
        assert store.count() == 8


class _NaNTeacher(Teacher):
    """Scores the length of the document text, except NaN for documents whose text mentions 'slipstream'."""

    kind = "test"

    def identity(self) -> dict:
        return {"kind": "test"}

    def prepare(self, queries: Sequence[str], docs: Sequence[str]) -> list[str]:
        return list(docs)

    def run(self, prepared: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        scores = np.array([np.nan if "slipstream" in d else float(len(d)) for d in prepared])
        yield np.arange(len(prepared)), scores


def test_nan_scores_are_refused_and_the_pairs_named(tmp_path, cranfield):
    ds, texts, pairs = cranfield
    bad = [p for p in pairs[:30] if "slipstream" in ds.corpus.text(p[1])]
    assert bad  # cranfield doc 1 is about a wing in a slipstream
    with ScoreStore(tmp_path / "s.db") as store:
        with pytest.raises(UserInputError, match=rf"{len(bad)} non-finite \(NaN/inf\) score\(s\), e\.g\. "
                                                 rf"\({bad[0][0]}, {bad[0][1]}\)"):
            score_pairs(_NaNTeacher(TeacherConfig("nan")), pairs[:30], texts, store, show_progress=False)
        assert store.count("nan") == 30 - len(bad)  # the finite scores of the batch were kept
        assert all(store.get("nan", q, d) is None for q, d in bad)


def test_ensemble_is_the_mean_of_frozen_z_scores(tmp_path, cranfield, tiny_cross_encoder_dir):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    _, texts, pairs = cranfield
    torch.manual_seed(7)
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    other = tmp_path / "ce-b"
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=128, num_labels=2)).save_pretrained(other)
    tok.save_pretrained(other)
    config = EnsembleConfig((_config(tiny_cross_encoder_dir, teacher_id="a"), _config(other, teacher_id="b")))
    assert config.id == "zmean(a+b)"
    first, rest = pairs[:40], pairs[40:70]
    with ScoreStore(tmp_path / "s.db") as store:
        reports = score_ensemble(config, first, texts, store, show_progress=False)
        assert [(r.teacher_id, r.scored) for r in reports] == [("a", 40), ("b", 40), ("zmean(a+b)", 40)]
        a = np.array([store.get("a", *p) for p in first])
        b = np.array([store.get("b", *p) for p in first])
        ens = np.array([store.get("zmean(a+b)", *p) for p in first])
        sa, sb = zstats(a), zstats(b)
        assert np.allclose(ens, ((a - a.mean()) / a.std() + (b - b.mean()) / b.std()) / 2)
        info = store.teacher_info("zmean(a+b)")
        assert info["zstats"]["a"]["mean"] == pytest.approx(sa.mean)
        assert [m["teacher_id"] for m in info["members"]] == ["a", "b"]
        assert info["members"][1]["score_space"] == "log_p_rel"
        # a later job over more pairs keeps the first job's statistics: old scores stay valid
        score_ensemble(config, first + rest, texts, store, show_progress=False)
        a2 = np.array([store.get("a", *p) for p in rest])
        b2 = np.array([store.get("b", *p) for p in rest])
        ens2 = np.array([store.get("zmean(a+b)", *p) for p in rest])
        assert np.allclose(ens2, mean_z(np.stack([a2, b2]), [sa, sb]))
        assert store.teacher_info("zmean(a+b)")["zstats"]["b"]["n"] == 40
    with pytest.raises(UserInputError, match="at least two"):
        EnsembleConfig((_config(other),))


def test_an_ensemble_over_blocks_standardises_each_pair_once(tmp_path, monkeypatch):
    """A groups file read in blocks may ask for a pair in two blocks (a query whose groups are apart): the
    members' z-statistics are still over the unique pairs, as for the list of them."""
    from rankdistill.data.groups import Group, write_groups
    from rankdistill.teachers import engine
    from rankdistill.teachers.pairs import read_group_pairs

    class Fixed(Teacher):
        def __init__(self, config: TeacherConfig) -> None:
            self.config, self.teacher_id = config, config.teacher_id
            self.k = 1.0 if config.teacher_id == "a" else -3.0

        def identity(self) -> dict:
            return {"kind": "fixed", "k": self.k}

        def info(self) -> dict:
            return self.identity()

        needs_query_ids = True

        def prepare(self, queries, docs, query_ids=None):
            return np.array([self.k * (int(q) * 10 + int(d[1:])) ** 1.5 for q, d in zip(query_ids, docs)])

        def run(self, prepared) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            yield np.arange(len(prepared)), prepared

    class Names:
        def query(self, q: str) -> str:
            return q

        def doc(self, d: str) -> str:
            return d

    monkeypatch.setattr(engine, "load_teacher", Fixed)
    write_groups([Group("1", ["d0"], ["d1", "d2", "d3"]), Group("2", ["d4"], ["d5"]), Group("1", ["d0"], ["d1"])],
                 tmp_path / "groups.jsonl")
    blocks = read_group_pairs(tmp_path / "groups.jsonl", {"1", "2"}, {f"d{i}" for i in range(6)}, block_pairs=4)
    assert [len(b) for b in blocks.blocks()] == [4, 4]  # the second: query 2's pairs, then query 1's again
    config = EnsembleConfig((TeacherConfig("x", teacher_id="a"), TeacherConfig("y", teacher_id="b")))
    stats, ens = [], []
    for name, pairs in (("list", unique_pairs(blocks)), ("blocks", blocks)):
        with ScoreStore(tmp_path / f"{name}.db") as store:
            reports = score_ensemble(config, pairs, Names(), store, show_progress=False)
            stats.append(store.teacher_info(config.id)["zstats"])
            ens.append({(q, d): v for q, d, v in store.iter_rows(config.id)})
        counts = [(r.requested, r.cached, r.scored) for r in reports]
        assert counts == ([(6, 0, 6)] * 3 if name == "list" else [(8, 2, 6)] * 3)
    assert stats[1]["a"]["n"] == stats[1]["b"]["n"] == 6
    for m in ("a", "b"):
        assert stats[1][m]["mean"] == pytest.approx(stats[0][m]["mean"], rel=1e-12)
        assert stats[1][m]["std"] == pytest.approx(stats[0][m]["std"], rel=1e-12)
    assert list(ens[1]) == list(ens[0]) and np.allclose(list(ens[1].values()), list(ens[0].values()), atol=1e-12)


def test_teacher_scores_computes_only_what_the_store_lacks(tmp_path, cranfield, tiny_cross_encoder_dir):
    _, texts, pairs = cranfield
    with ScoreStore(tmp_path / "s.db") as store:
        provider = TeacherScores(_config(tiny_cross_encoder_dir, teacher_id="t"), store, texts, show_progress=False)
        got = provider.get(pairs[:10])
        assert set(got) == set(pairs[:10])
        # after the first call, the store is read once for what it has and once for what was scored: asking
        # which pairs are missing, scoring them and reading them all read it three times over
        reads = {"missing": [], "get_many": []}
        for name, real in (("missing", ScoreStore.missing), ("get_many", ScoreStore.get_many)):
            def counted(self, teacher, asked, real=real, name=name):
                asked = list(asked)
                reads[name].append(len(asked))
                return real(self, teacher, asked)
            setattr(store, name, counted.__get__(store))
        got2 = provider.get(pairs[5:15])
        assert [r.scored for r in provider.reports] == [10, 5]
        assert got2[pairs[5]] == got[pairs[5]] and set(got2) == set(pairs[5:15])
        assert reads == {"get_many": [10, 5], "missing": [5]}  # the last one inside the scoring, of the 5 only
        reads["get_many"].clear()
        reads["missing"].clear()
        assert provider.get(pairs[:15]).keys() == set(pairs[:15]) and reads == {"get_many": [15], "missing": []}
        provider.close()


def test_teacher_scores_checks_the_teacher_even_when_every_pair_is_stored(tmp_path, cranfield,
                                                                         tiny_cross_encoder_dir):
    """Mining reads scores through TeacherScores: with every pair already stored it used to skip the check that
    the id's scores were made by this teacher, and served another max length's (or old weights') scores."""
    _, texts, pairs = cranfield
    with ScoreStore(tmp_path / "s.db") as store:
        first = TeacherScores(_config(tiny_cross_encoder_dir, teacher_id="t"), store, texts, show_progress=False)
        first.get(pairs[:6])
        first.close()
        again = TeacherScores(_config(tiny_cross_encoder_dir, teacher_id="t"), store, texts, show_progress=False)
        assert len(again.get(pairs[:6])) == 6 and [r.cached for r in again.reports] == [6]  # checked, not scored
        again.close()
        other = TeacherScores(TeacherConfig(str(tiny_cross_encoder_dir), max_length=32, batch_size=8, device="cpu",
                                            teacher_id="t"), store, texts, show_progress=False)
        with pytest.raises(UserInputError, match=r"holds scores made with other settings \(max_length: stored 64, "
                                                 r"now 32"):
            other.get(pairs[:6])
        other.close()
    with pytest.raises(UserInputError, match="the chunk size must be an integer >= 1, got 0"):
        TeacherScores(_config(tiny_cross_encoder_dir), store, texts, chunk_size=0)


def test_tokenising_in_threads_gives_one_calls_encoding(scifact_dir):
    """Slices tokenised in threads are concatenated back into exactly what one call returns."""
    from transformers import AutoTokenizer

    from rankdistill.data import load_dataset
    from rankdistill.models import resolve_model
    from rankdistill.models.tokenize import tokenize_parallel

    ds = load_dataset(scifact_dir)
    ids = ds.corpus.ids()[:700]
    docs = [ds.corpus.text(d) for d in ids]
    queries = [f"query {i} about {d[:20]}" for i, d in enumerate(docs)]
    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    kwargs = dict(truncation="longest_first", max_length=96, padding=False, return_attention_mask=False,
                  return_token_type_ids=True)
    one = tok(queries, docs, **kwargs)
    many = tokenize_parallel(tok, queries, docs, workers=3, **kwargs)
    assert many["input_ids"] == [list(x) for x in one["input_ids"]]
    assert many["token_type_ids"] == [list(x) for x in one["token_type_ids"]]
    singles = tokenize_parallel(tok, docs, workers=2, add_special_tokens=False, truncation=True, max_length=40)
    assert singles["input_ids"] == tok(docs, add_special_tokens=False, truncation=True, max_length=40)["input_ids"]


def test_stores_of_cross_fitted_teachers_made_before_the_weights_digest_are_taken(tmp_path):
    """A cross-fitted (or ensemble) teacher's identity holds its members', where the weights digest and dtype
    now sit too: a store made before was refused as 'other settings (members: ...)'. It is taken and the
    members' new keys are recorded; a member that really differs is still refused."""
    from rankdistill.teachers.engine import claim_teacher_id

    old_member = {"kind": "cross", "model": "m", "max_length": 64}
    now_member = {**old_member, "weights": "ab" * 16, "dtype": "float32"}
    with ScoreStore(tmp_path / "s.db") as store:
        store.set_teacher_info("cf", {"kind": "crossfit", "members": [old_member, old_member], "teacher_id": "cf"})
        info = claim_teacher_id(store, "cf", {"kind": "crossfit", "members": [now_member, now_member]}, {})
        assert info["members"] == [now_member, now_member] and info["teacher_id"] == "cf"
        assert store.teacher_info("cf")["members"][0]["weights"] == "ab" * 16
        other = {**now_member, "weights": "cd" * 16}
        with pytest.raises(UserInputError, match="other settings \\(members: stored"):
            claim_teacher_id(store, "cf", {"kind": "crossfit", "members": [now_member, other]}, {})
        with pytest.raises(UserInputError, match="other settings"):
            claim_teacher_id(store, "cf", {"kind": "crossfit", "members": [{**now_member, "max_length": 32}] * 2},
                             {})


def test_executor_workers_score_in_the_dtype_the_store_records(tmp_path, cranfield, tiny_cross_encoder_dir):
    """Workers load the teacher from its config: with dtype auto, GPU workers of a CPU driver would score in
    bf16 under the driver's float32 identity. They get the driver's resolved dtype instead."""
    from rankdistill.experiments.executors import LocalExecutor

    seen = []

    class Recording(LocalExecutor):
        def map(self, fn, tasks, on_done=None):
            seen.extend(t[0] for t in tasks)
            return super().map(fn, tasks, on_done)

    _, texts, pairs = cranfield
    teacher = load_teacher(_config(tiny_cross_encoder_dir))
    assert teacher.config.dtype == "auto"
    with ScoreStore(tmp_path / "s.db") as store:
        report = score_pairs(teacher, pairs[:9], texts, store, show_progress=False, executor=Recording(), chunk_size=4)
        assert report.scored == 9 and store.teacher_info(teacher.teacher_id)["dtype"] == "float32"
    assert len(seen) == 3 and {c.dtype for c in seen} == {"float32"}


def test_teacher_score_takes_one_query_per_document(tiny_cross_encoder_dir):
    """Three queries and one document gave [s, nan, nan]; one query and three documents one score; a string
    was scored per character."""
    teacher = load_teacher(_config(tiny_cross_encoder_dir))
    try:
        assert teacher.score(["wing", "flutter"], ["a wing", "flutter of wings"]).shape == (2,)
        with pytest.raises(ValueError, match="3 queries for 1 documents: give one query per document"):
            teacher.score(["a", "b", "c"], ["d"])
        with pytest.raises(TypeError, match="not one string"):
            teacher.score("wing", "docs")  # type: ignore[arg-type]
    finally:
        teacher.close()
