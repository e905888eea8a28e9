"""Cross-fitted teachers: fold assignment, the folder format, each pair scored by the members that did not train
on its query (in the scoring engine, ``rankdistill score`` and ``rankdistill rerank``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rankdistill.cli import main
from rankdistill.data.runs import read_run, write_run
from rankdistill.errors import UserInputError
from rankdistill.teachers.crossfit import (
    CrossFitTeacher,
    assign_folds,
    is_crossfit,
    read_crossfit,
    write_crossfit,
)
from rankdistill.teachers.engine import CorpusTexts, score_pairs
from rankdistill.teachers.models import TeacherConfig, load_teacher
from rankdistill.teachers.store import ScoreStore

pytestmark = pytest.mark.usefixtures("one_thread")


def test_assign_folds_partitions_reproducibly():
    ids = [f"q{i}" for i in range(101)]
    folds = assign_folds(ids, 3, seed=7)
    assert sorted(len(f) for f in folds) == [33, 34, 34]
    assert sorted(q for f in folds for q in f) == sorted(ids)
    # the folds depend on the set of ids, not their order or repeats
    assert assign_folds([*reversed(ids), "q5", "q9"], 3, seed=7) == folds
    assert assign_folds(ids, 3, seed=8) != folds
    with pytest.raises(UserInputError, match="at least 2 folds"):
        assign_folds(ids, 1, seed=0)
    with pytest.raises(UserInputError, match="cannot split 2 queries into 3 folds"):
        assign_folds(["a", "b"], 3, seed=0)


def _second_model(path, tokenizer_dir):
    """A tiny cross-encoder with other random weights than the shared fixture's."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(11)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def crossfit_dir(tmp_path_factory, tiny_cross_encoder_dir):
    """Member 0 (the shared tiny model) trained on q1, member 1 (other weights) on q2; q3 is nobody's."""
    import shutil

    folder = tmp_path_factory.mktemp("crossfit")
    shutil.copytree(tiny_cross_encoder_dir, folder / "member-0")
    _second_model(folder / "member-1", tiny_cross_encoder_dir)
    write_crossfit(folder, [("member-0", ["q1"]), ("member-1", ["q2", "q1b"])], folds=2, seed=0)
    return folder


QUERIES = {"q1": "wing lift in a slipstream", "q2": "heat conduction in composite slabs", "q3": "boundary layer"}


DOCS = {"d1": "an experimental study of a wing in a propeller slipstream",
        "d2": "simple shear flow past a flat plate", "d3": "heat"}


class _Docs:
    def text(self, doc_id):
        return DOCS[doc_id]


def test_each_query_is_scored_by_the_members_that_did_not_train_on_it(crossfit_dir, tmp_path):
    plan = read_crossfit(crossfit_dir)
    assert is_crossfit(crossfit_dir) and plan.route("q1") == (1,) and plan.route("q2") == (0,)
    assert plan.route("q3") == (0, 1)
    cfg = TeacherConfig(str(crossfit_dir), max_length=48, batch_size=2, device="cpu")
    teacher = load_teacher(cfg)
    assert isinstance(teacher, CrossFitTeacher)
    members = [load_teacher(TeacherConfig(str(crossfit_dir / f"member-{m}"), max_length=48, device="cpu"))
               for m in (0, 1)]
    docs = list(DOCS)
    own = {m: {q: members[m].score([QUERIES[q]] * 3, [DOCS[d] for d in docs]) for q in QUERIES}
           for m in (0, 1)}
    assert not np.allclose(own[0]["q1"], own[1]["q1"])  # the members differ, so routing is visible
    pairs = [(q, d) for q in QUERIES for d in docs]
    # the members load their weights when a pair is routed to them: q1's pairs need member 1 only
    assert not any(m.loaded for m in teacher.members)
    with ScoreStore(tmp_path / "q1.db") as store:
        score_pairs(teacher, [p for p in pairs if p[0] == "q1"], CorpusTexts(QUERIES, _Docs()), store,
                    show_progress=False)
    assert [m.loaded for m in teacher.members] == [False, True]
    with ScoreStore(tmp_path / "s.db") as store:
        report = score_pairs(teacher, pairs, CorpusTexts(QUERIES, _Docs()), store, show_progress=False)
        assert report.scored == 9
        got = store.get_many(str(crossfit_dir), pairs)
        info = store.teacher_info(str(crossfit_dir))
    expected = {"q1": own[1]["q1"], "q2": own[0]["q2"], "q3": (own[0]["q3"] + own[1]["q3"]) / 2}
    for q in QUERIES:
        assert [got[(q, d)] for d in docs] == pytest.approx(list(expected[q]), abs=1e-6)
    assert info["kind"] == "crossfit" and len(info["members"]) == 2
    assert [m["trained_on"] for m in info["members"]] == [1, 2]
    # the convenience scorer needs the query ids; a query both members trained on has no out-of-sample score
    assert teacher.score([QUERIES["q1"]], ["heat"], ["q1"]) == pytest.approx(own[1]["q1"][2:], abs=1e-6)
    write_crossfit(tmp_path / "both", [(str(crossfit_dir / "member-0"), ["q1"]),
                                        (str(crossfit_dir / "member-1"), ["q1"])])
    both = load_teacher(TeacherConfig(str(tmp_path / "both"), max_length=48, device="cpu"))
    with pytest.raises(UserInputError, match="'q1' is among the training queries of every member"):
        both.score([QUERIES["q1"]], ["heat"], ["q1"])
    for t in (teacher, both, *members):
        t.close()


@pytest.mark.parametrize("body, message", [
    (None, "no crossfit.json"),
    ("{", "unreadable cross-fitted teacher file"),
    ({"members": []}, "not a rankdistill-crossfit file"),
    ({"format": "rankdistill-crossfit", "members": [{"model": "m0", "trained_on": []}]}, "at least 2 members"),
    ({"format": "rankdistill-crossfit", "members": [{"model": "m0", "trained_on": []}, {"model": "m0"}]},
     "member 1 needs"),
    ({"format": "rankdistill-crossfit", "members": [{"model": "m0", "trained_on": []},
                                                      {"model": "gone", "trained_on": ["q"]}]},
     "member 1's model folder 'gone' is missing"),
])
def test_bad_crossfit_files_are_refused(tmp_path, body, message):
    (tmp_path / "m0").mkdir()
    if body is not None:
        (tmp_path / "crossfit.json").write_text(body if isinstance(body, str) else json.dumps(body))
    with pytest.raises(UserInputError, match=message) as e:
        read_crossfit(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_score_and_rerank_commands_take_a_crossfit_folder(crossfit_dir, scifact_dir, tmp_path, capsys):
    """`rankdistill score` stores one teacher (the cross-fitted one); `rankdistill rerank` gives each test query
    the mean of the two members (neither trained on it), and a query of member 0's training set member 1's."""
    from rankdistill.data import load_dataset

    ds = load_dataset(str(scifact_dir))
    test = sorted(ds.qrels("test"))[:3]
    docs = ds.corpus.ids()[:4]
    cands = tmp_path / "c.trec"
    write_run({q: {d: float(-i) for i, d in enumerate(docs)} for q in test}, cands)
    plan_dir = tmp_path / "cf"
    plan_dir.mkdir()
    for m in (0, 1):
        (plan_dir / f"member-{m}").symlink_to(crossfit_dir / f"member-{m}")
    write_crossfit(plan_dir, [("member-0", [test[0]]), ("member-1", ["none"])])
    argv = ["--dataset", str(scifact_dir), "--split", "test", "--candidates", str(cands)]
    assert main(["rerank", *argv, "--model", str(plan_dir), "--output", str(tmp_path / "cf.trec")]) == 0
    member = {}
    for m in (0, 1):
        assert main(["rerank", *argv, "--model", str(plan_dir / f"member-{m}"), "--arch", "cross",
                     "--output", str(tmp_path / f"m{m}.trec")]) == 0
        member[m] = read_run(tmp_path / f"m{m}.trec")
    got = read_run(tmp_path / "cf.trec")
    for q in test:
        for d in docs:
            want = member[1][q][d] if q == test[0] else (member[0][q][d] + member[1][q][d]) / 2
            assert got[q][d] == pytest.approx(want, abs=2e-6)
    groups = tmp_path / "g.jsonl"
    groups.write_text("".join(json.dumps({"query_id": q, "positive_ids": docs[:1], "negative_ids": docs[1:]}) + "\n"
                              for q in test))
    db = tmp_path / "s.db"
    assert main(["score", "--dataset", str(scifact_dir), "--split", "test", "--groups", str(groups),
                 "--teacher", str(plan_dir), "--max-length", "128", "--output", str(db)]) == 0
    with ScoreStore(db) as store:
        assert store.teachers() == [str(plan_dir)]
        stored = store.get_many(str(plan_dir), [(q, d) for q in test for d in docs])
    # the teacher engine and rerank score the same pairs (rerank's TREC file keeps 6 decimals)
    assert all(stored[(q, d)] == pytest.approx(got[q][d], abs=1e-4) for q in test for d in docs)


def test_fold_seed_and_member_ids_are_checked(tmp_path):
    """seed=None drew other folds at every call; one string of ids was written as one id per character."""
    with pytest.raises(UserInputError, match="the fold seed must be an integer, got None"):
        assign_folds(["q1", "q2", "q3"], 2, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="member m0: its training query ids must be a collection, not one string"):
        write_crossfit(tmp_path, [("m0", "12"), ("m1", ["3"])])
    assert not (tmp_path / "crossfit.json").exists()
