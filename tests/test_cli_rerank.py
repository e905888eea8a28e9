"""``rankdistill rerank``: re-rank SciFact candidates with saved bi- and cross-encoders, checked against
sentence-transformers' own scoring of the same folders."""

from __future__ import annotations

import random

import pytest

from rankdistill.cli import main
from rankdistill.data.runs import read_run, write_run
from rankdistill.models.bi_encoder import BiEncoder
from rankdistill.models.cross_encoder import CrossEncoder
from test_training_fixtures import scifact_groups  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def candidates(scifact_dir, tmp_path_factory):
    """Test-split candidates: each of 8 judged queries with its relevant documents and 7 random ones."""
    from rankdistill.data import load_dataset

    ds = load_dataset(str(scifact_dir))
    qrels = ds.qrels("test")
    ids = ds.corpus.ids()
    rng = random.Random(4)
    run = {}
    for qid in sorted(qrels)[:8]:
        docs = [*qrels[qid], *rng.sample(ids, 7)]
        run[qid] = {d: float(len(docs) - i) for i, d in enumerate(docs)}
    path = tmp_path_factory.mktemp("cands") / "cands.trec"
    write_run(run, path, tag="first")
    return path, run, ds


def _rerank(scifact_dir, model, cands, out, *extra) -> int:
    return main(["rerank", "--dataset", str(scifact_dir), "--split", "test", "--model", str(model),
                 "--candidates", str(cands), "--output", str(out), *extra])


def test_bi_encoder_rerank_equals_sentence_transformers_scores(scifact_dir, candidates, tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    path, run, ds = candidates
    folder = tmp_path / "bi"
    BiEncoder.from_pretrained(str(tiny_bert_dir), pooling="mean", max_doc_length=64).save(folder)
    out = tmp_path / "bi.trec"
    assert _rerank(scifact_dir, folder, path, out) == 0
    got = read_run(out)
    assert set(got) == set(run) and all(set(got[q]) == set(run[q]) for q in run)
    st = SentenceTransformer(str(folder), device="cpu")
    queries = ds.queries("test")
    for q in list(run)[:3]:
        docs = sorted(run[q])
        qe = st.encode([queries[q]], convert_to_tensor=True)
        de = st.encode([ds.corpus.text(d) for d in docs], convert_to_tensor=True)
        expected = (de @ qe[0]).tolist()
        # TREC files keep 6 decimals
        assert [got[q][d] for d in docs] == pytest.approx(expected, abs=2e-6 + 1e-6 * max(map(abs, expected)))
    lines = out.read_text().splitlines()
    first = lines[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1" and first[5] == "bi"


def test_cross_encoder_rerank_equals_sentence_transformers_logits(scifact_dir, candidates, tiny_cross_encoder_dir,
                                                                   tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    path, run, ds = candidates
    folder = tmp_path / "ce"
    CrossEncoder.from_pretrained(str(tiny_cross_encoder_dir), max_length=96).save(folder)
    out = tmp_path / "ce.trec"
    assert _rerank(scifact_dir, folder, path, out, "--k", "5", "--tag", "ce-run") == 0
    got = read_run(out)
    # --k 5 keeps each query's 5 best first-stage candidates
    for q in run:
        best = sorted(run[q], key=lambda d: -run[q][d])[:5]
        assert set(got[q]) == set(best)
    st = STCrossEncoder(str(folder), device="cpu")
    queries = ds.queries("test")
    q = sorted(run)[0]
    docs = sorted(got[q])
    expected = st.predict([(queries[q], ds.corpus.text(d)) for d in docs])
    assert [got[q][d] for d in docs] == pytest.approx(list(map(float, expected)), abs=2e-6)
    assert out.read_text().split("\n")[0].endswith(" ce-run")


def test_rerank_a_model_trained_by_the_train_command(scifact_dir, scifact_groups, candidates,  # noqa: F811
                                                     tiny_cross_encoder_dir, tmp_path):
    model = tmp_path / "trained"
    assert main(["train", "--dataset", str(scifact_dir), "--groups", str(scifact_groups[0]), "--arch", "cross",
                 "--model", str(tiny_cross_encoder_dir), "--loss", "lce", "--group-size", "4", "--batch-size", "4",
                 "--budget-docs", "32", "--max-length", "96", "--output", str(model)]) == 0
    out = tmp_path / "r.trec"
    assert _rerank(scifact_dir, model, candidates[0], out) == 0
    assert set(read_run(out)) == set(candidates[1])


def test_rerank_bad_input(scifact_dir, candidates, tiny_bert_dir, tmp_path, capsys, caplog):
    path, run, _ = candidates
    q = sorted(run)[0]
    bad = tmp_path / "bad.trec"
    write_run({q: {**run[q], "no-such-doc": 0.0}}, bad)
    assert _rerank(scifact_dir, tiny_bert_dir, bad, tmp_path / "o.trec") == 2
    assert "1 candidate document(s) are not in the corpus" in capsys.readouterr().err
    assert _rerank(scifact_dir, tmp_path / "missing", path, tmp_path / "o.trec") == 2
    assert "model folder not found" in capsys.readouterr().err
    train_only = tmp_path / "train-only.trec"
    write_run({"0": {"4983": 1.0}}, train_only)  # query 0 is a training query of SciFact
    with caplog.at_level("WARNING"):
        assert _rerank(scifact_dir, tiny_bert_dir, train_only, tmp_path / "o.trec") == 2
    assert "no query of the run is in split 'test'" in capsys.readouterr().err
    assert not caplog.records, "a warning before the one-line error that says the same"
    assert not (tmp_path / "o.trec").exists()
    empty = tmp_path / "empty.trec"
    empty.write_text("")  # was "no query of the run is in split 'test'", as if the split were wrong
    assert _rerank(scifact_dir, tiny_bert_dir, empty, tmp_path / "o.trec") == 2
    assert "the candidates run holds no results" in capsys.readouterr().err
    assert not (tmp_path / "o.trec").exists()
    # --arch cross on a bi-encoder folder re-ranked with a freshly initialised head, silently
    assert _rerank(scifact_dir, tiny_bert_dir, path, tmp_path / "o.trec", "--arch", "cross") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--arch cross on a model without a ranking head" in err[0]
    assert not (tmp_path / "o.trec").exists()


def test_arch_cross_still_overrides_a_guess_the_folder_does_not_contradict(tiny_cross_encoder_dir, tmp_path):
    """A classifier saved without ``architectures`` in its config is guessed "bi"; --arch cross overrides that."""
    import json
    import shutil

    from rankdistill.models.scoring import load_student

    d = shutil.copytree(tiny_cross_encoder_dir, tmp_path / "no-archs")
    config = json.loads((d / "config.json").read_text())
    del config["architectures"]
    (d / "config.json").write_text(json.dumps(config))
    assert isinstance(load_student(d, "cross"), CrossEncoder)


def test_the_python_api_refuses_what_the_cli_refuses(scifact_dir, candidates, tiny_bert_dir, tiny_cross_encoder_dir):
    """``load_student(d, arch="bi-encoder")`` gave a cross-encoder with a random head, silently; a cross-encoder
    loaded with ``arch="bi"`` lost its head; ``score_candidates`` raised a bare KeyError from the tokenisation
    for a document or query it did not know, and an AttributeError for a dataset or a {doc_id: text} dict."""
    from rankdistill.errors import UserInputError
    from rankdistill.models.scoring import load_student, score_candidates

    with pytest.raises(UserInputError, match="unknown student architecture 'bi-encoder'"):
        load_student(tiny_bert_dir, "bi-encoder")
    with pytest.raises(UserInputError, match="--arch bi on a cross-encoder"):
        load_student(tiny_cross_encoder_dir, "bi")
    _, run, ds = candidates
    model = load_student(tiny_bert_dir)
    queries = ds.queries("test")
    some = {q: run[q] for q in sorted(run)[:2]}
    want = score_candidates(model, queries, ds.corpus, some, progress=False)
    texts = {d: ds.corpus.text(d) for docs in some.values() for d in docs}
    assert score_candidates(model, queries, ds, some, progress=False) == want
    assert score_candidates(model, queries, texts, some, progress=False) == want
    q = sorted(some)[0]
    with pytest.raises(UserInputError, match=r"1 candidate document\(s\) are not in the corpus \(e.g. nope\)"):
        score_candidates(model, queries, ds.corpus, {q: {**some[q], "nope": 1.0}}, progress=False)
    with pytest.raises(UserInputError, match=r"1 candidate document\(s\) are not in the corpus"):
        score_candidates(model, queries, texts, {q: {**some[q], "nope": 1.0}}, progress=False)
    with pytest.raises(UserInputError, match=r"1 candidate queries have no text \(e.g. zzz\)"):
        score_candidates(model, queries, ds.corpus, {"zzz": some[q]}, progress=False)
    with pytest.raises(TypeError, match="corpus must be a document store"):
        score_candidates(model, queries, [1, 2], some, progress=False)
