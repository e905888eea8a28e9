"""The retrieve / evaluate / data verbs as a user runs them, and their errors."""

from __future__ import annotations

import json

import pytest

from rankdistill.cli import main


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_bm25_on_scifact_end_to_end(scifact_dir, tmp_path, capsys):
    run = tmp_path / "bm25.trec"
    assert main(["retrieve", "--dataset", str(scifact_dir), "--split", "test", "--retriever", "bm25",
                 "--k", "100", "--output", str(run)]) == 0
    lines = run.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 300
    assert all(len(line.split()) == 6 for line in lines)
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    pq = tmp_path / "pq.tsv"
    assert main(["evaluate", "--dataset", str(scifact_dir), "--split", "test", "--run", str(run), "--json",
                 "--per-query", str(pq)]) == 0
    means = json.loads(capsys.readouterr().out)
    assert list(means) == ["nDCG@10"]
    assert means["nDCG@10"] >= 0.66  # BEIR's BM25: 0.665; bm25s with stemming about 0.68
    assert len(pq.read_text().splitlines()) == 301


def test_retrieve_is_deterministic(cranfield_dir, tmp_path):
    for name in ("a", "b"):
        assert main(["retrieve", "--dataset", str(cranfield_dir), "--split", "test", "--k", "20",
                     "--output", str(tmp_path / f"{name}.trec")]) == 0
    assert (tmp_path / "a.trec").read_bytes() == (tmp_path / "b.trec").read_bytes()


def test_evaluate_trec_dl_official_figure(trecdl_manifest, shared_data, capsys):
    run = shared_data / "trec-dl" / "runs" / "run.dl19.bm25.top100.trec"
    assert main(["evaluate", "--dataset", str(trecdl_manifest), "--split", "dl19", "--run", str(run),
                 "--json"]) == 0
    means = json.loads(capsys.readouterr().out)
    assert round(means["nDCG@10"], 4) == 0.5058
    assert "AP(rel=2)" in means


def test_data_info(scifact_dir, capsys):
    assert main(["data", "info", str(scifact_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["docs"] == 5183
    assert info["splits"]["test"] == {"queries": 300, "judged_queries": 300, "qrels": 339, "relevant": 339,
                                      "rel_threshold": 1}
    assert main(["data", "info", str(scifact_dir)]) == 0
    assert "mean doc length" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_unknown_split_exit_2(scifact_dir, tmp_path, capsys):
    code = main(["retrieve", "--dataset", str(scifact_dir), "--split", "dev", "--output", str(tmp_path / "r")])
    assert code == 2
    assert "known splits: test, train" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_missing_files_exit_2(scifact_dir, tmp_path, capsys):
    assert main(["evaluate", "--dataset", str(scifact_dir), "--split", "test", "--run",
                 str(tmp_path / "nope.trec")]) == 2
    assert "nope.trec: run file not found" in _error_line(capsys)
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2
    assert "not found" in _error_line(capsys)


def test_bad_qrels_line_exit_2(tmp_path, capsys):
    (tmp_path / "c.tsv").write_text("d1\tflutter\nd2\twing\n")
    (tmp_path / "q.tsv").write_text("1\tflutter\n")
    (tmp_path / "r.txt").write_text("1 0 d1 1\n1 0 d2\n")
    (tmp_path / "d.toml").write_text('corpus = "c.tsv"\n[splits.s]\nqueries = "q.tsv"\nqrels = "r.txt"\n')
    (tmp_path / "run.trec").write_text("1 Q0 d1 1 2.0 x\n")
    assert main(["evaluate", "--dataset", str(tmp_path / "d.toml"), "--split", "s", "--run",
                 str(tmp_path / "run.trec")]) == 2
    assert "r.txt:2:" in _error_line(capsys)


def test_run_with_unknown_documents_warns_and_evaluates(scifact_dir, tmp_path, capsys, caplog):
    qid, did = next((q, d) for q, docs in
                    ((line.split("\t")[0], [line.split("\t")[1]])
                     for line in (scifact_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]) for d in docs)
    (tmp_path / "run.trec").write_text(f"{qid} Q0 ghost-1 1 9.0 x\n{qid} Q0 ghost-2 2 8.0 x\n{qid} Q0 {did} 3 7.0 x\n")
    assert main(["evaluate", "--dataset", str(scifact_dir), "--split", "test", "--run",
                 str(tmp_path / "run.trec"), "--metrics", "RR@10", "--json"]) == 0
    means = json.loads(capsys.readouterr().out)
    assert means["RR@10"] == pytest.approx((1 / 3) / 300)
    assert any("2 document(s) absent from the corpus" in r.getMessage() for r in caplog.records)


def test_bad_flag_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["retrieve", "--dataset", "x", "--split", "test", "--output", "o", "--k", "many"])
    assert e.value.code == 2


def test_a_verb_composed_by_run_fails_in_one_line(monkeypatch, capsys, tmp_path):
    """Inside ``run`` (cli depth 1) a verb's error used to be printed by the verb, then ``run`` added a second
    line ("failed with exit code 2 (its message is above)"); argparse errors of a composed verb left ``run``
    with a SystemExit. Now both reach ``run`` as one StageFailed naming the verb."""
    import rankdistill.cli as cli
    from rankdistill.experiments.runner import StageFailed, call_verb

    monkeypatch.setattr(cli, "_depth", 1)
    with pytest.raises(StageFailed) as e:
        call_verb(["evaluate", "--dataset", str(tmp_path / "none"), "--split", "test", "--run", "x.trec"])
    assert str(e.value).startswith("`rankdistill evaluate`: dataset ") and "\n" not in str(e.value)
    with pytest.raises(StageFailed) as e:
        call_verb(["diagnose", "--metric", "foo"])
    assert "invalid choice: 'foo'" in str(e.value) and "\n" not in str(e.value)
    assert capsys.readouterr().err == ""


def test_a_verb_composed_in_a_worker_process_fails_in_one_line(tmp_path):
    """In an executor's worker (a fresh process, where no ``run`` is active) a composed verb printed its error
    to the worker's stderr (never shown under Ray) and the run said only "failed with exit code 2"."""
    from rankdistill.experiments.executors import ProcessExecutor
    from rankdistill.experiments.runner import StageFailed, call_verb

    pool = ProcessExecutor(1)
    try:
        with pytest.raises(StageFailed) as e:
            pool.map(call_verb, [(["evaluate", "--dataset", str(tmp_path / "none"), "--split", "test",
                                   "--run", "x.trec"],)])
    finally:
        pool.close()
    assert str(e.value).startswith("`rankdistill evaluate`: dataset ") and "not found" in str(e.value)
