"""``rankdistill score`` end to end: caching, exports, bad input, and a kill -9 in the middle of a run."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rankdistill.cli import main
from rankdistill.data import Group, load_dataset, write_groups
from rankdistill.errors import UserInputError
from rankdistill.teachers.store import ScoreStore

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _groups(cranfield_dir, path: Path, n_queries: int, n_negatives: int) -> list[tuple[str, str]]:
    """Groups of the first training queries: judged positives, and the first corpus documents as negatives."""
    ds = load_dataset(cranfield_dir)
    qrels = ds.qrels("train")
    qids = sorted(qrels, key=int)[:n_queries]
    docs = ds.corpus.ids()
    groups = []
    for q in qids:
        pos = sorted(d for d, r in qrels[q].items() if r > 0)
        neg = [d for d in docs if d not in qrels[q]][:n_negatives]
        groups.append(Group(q, pos, neg, "test", 0))
    write_groups(groups, path)
    return list(dict.fromkeys((g.query_id, d) for g in groups for d in g.positive_ids + g.negative_ids))


def _rows(path: Path, teacher: str) -> dict[tuple[str, str], float]:
    with ScoreStore(path, readonly=True) as store:
        return {(q, d): s for q, d, s in store.iter_rows(teacher)}


def test_score_caches_and_exports(tmp_path, cranfield_dir, tiny_cross_encoder_dir, capsys, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    pairs = _groups(cranfield_dir, tmp_path / "groups.jsonl", 3, 5)
    args = ["score", "--dataset", str(cranfield_dir), "--groups", str(tmp_path / "groups.jsonl"),
            "--teacher", str(tiny_cross_encoder_dir), "--teacher-id", "tiny", "--output", str(tmp_path / "s.db"),
            "--max-length", "64", "--batch-size", "4", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"tiny: {len(pairs)} pairs, 0 already stored, {len(pairs)} scored" in out

    def no_loading(*a, **k):  # every pair is stored: the re-run must not load the teacher's weights
        raise AssertionError("loaded the teacher")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", no_loading)
    assert main([*args, "--export-run", str(tmp_path / "t.trec"),
                 "--export-json-gz", str(tmp_path / "t.json.gz")]) == 0
    assert f"tiny: {len(pairs)} pairs, {len(pairs)} already stored, 0 scored" in capsys.readouterr().out
    rows = _rows(tmp_path / "s.db", "tiny")
    assert set(rows) == set(pairs)
    teacher_file = json.loads(gzip.decompress((tmp_path / "t.json.gz").read_bytes()))
    assert {(q, d) for q in teacher_file for d in teacher_file[q]} == set(pairs)
    assert all(teacher_file[q][d] == pytest.approx(s) for (q, d), s in rows.items())
    lines = (tmp_path / "t.trec").read_text().splitlines()
    assert len(lines) == len(pairs)
    first = lines[0].split()
    q0 = first[0]
    assert first[3] == "1" and float(first[4]) == pytest.approx(max(s for (q, _), s in rows.items() if q == q0),
                                                                abs=1e-6)


def test_score_reads_the_groups_a_block_at_a_time(tmp_path, cranfield_dir, tiny_cross_encoder_dir, capsys,
                                                 monkeypatch):
    """A groups file's pairs are checked in one pass and scored a block at a time; a block ends only where the
    query id changes, and a query met again in a later block finds its pairs stored. The store and the exports
    are those of one block."""
    from rankdistill.teachers import pairs as pairs_mod
    from rankdistill.teachers.store import _docs_by_query

    ds = load_dataset(cranfield_dir)
    docs = ds.corpus.ids()
    groups = [Group("1", ["184"], docs[:4]), Group("1", ["29"], docs[2:6]), Group("2", ["12"], docs[:3]),
              Group("3", ["5"], docs[5:8]), Group("1", ["184"], docs[:2])]
    write_groups(groups, tmp_path / "groups.jsonl")
    unique = list(dict.fromkeys((g.query_id, d) for g in groups for d in (*g.positive_ids, *g.negative_ids)))
    gp = pairs_mod.read_group_pairs(tmp_path / "groups.jsonl", ds.all_queries("train"), ds.corpus, block_pairs=4)
    blocks = list(gp.blocks())
    assert [len(b) for b in blocks] == [8, 4, 4, 3]  # query 1's two groups stay together, past the 4 pairs
    assert [b[0] for b in blocks] == [("1", "184"), ("2", "12"), ("3", "5"), ("1", "184")]
    assert gp.pairs == 19 and gp.groups == 5 and gp.empty_pools == 0 and list(gp) == [p for b in blocks for p in b]
    assert list(dict.fromkeys(gp)) == unique

    base = ["score", "--dataset", str(cranfield_dir), "--groups", str(tmp_path / "groups.jsonl"),
            "--teacher", str(tiny_cross_encoder_dir), "--teacher-id", "tiny", "--max-length", "64",
            "--batch-size", "4", "--device", "cpu"]
    assert main([*base, "--output", str(tmp_path / "one.db"), "--export-json-gz", str(tmp_path / "one.json.gz"),
                 "--export-run", str(tmp_path / "one.trec")]) == 0
    assert f"tiny: {len(unique)} pairs, 0 already stored, {len(unique)} scored" in capsys.readouterr().out
    monkeypatch.setattr(pairs_mod, "PAIR_BLOCK", 4)
    assert main([*base, "--output", str(tmp_path / "blocks.db"), "--export-json-gz",
                 str(tmp_path / "blocks.json.gz"), "--export-run", str(tmp_path / "blocks.trec")]) == 0
    assert "tiny: 19 pairs, 3 already stored, 16 scored" in capsys.readouterr().out
    one, blocked = _rows(tmp_path / "one.db", "tiny"), _rows(tmp_path / "blocks.db", "tiny")
    assert list(one) == list(blocked) and np.allclose(list(one.values()), list(blocked.values()), atol=1e-6)
    # the exports read the pairs through a temporary table: the same bytes as a set of documents per query
    with ScoreStore(tmp_path / "blocks.db") as store:
        assert list(store.iter_scores("tiny", gp)) == list(store._stored("tiny", _docs_by_query(unique)))
        store.export_json_gz(tmp_path / "again.json.gz", "tiny", unique)
        store.export_json_gz(tmp_path / "some.json.gz", "tiny", unique[:5])
        assert store.scores("tiny", [("3", "5"), ("3", "no-such-doc"), ("9", "1")]) == {"3": {"5": blocked[("3", "5")]}}
    assert (tmp_path / "again.json.gz").read_bytes() == (tmp_path / "blocks.json.gz").read_bytes()
    assert json.loads(gzip.decompress((tmp_path / "some.json.gz").read_bytes())) == {
        "1": {d: blocked[("1", d)] for _, d in unique[:5]}}
    assert len((tmp_path / "blocks.trec").read_text().splitlines()) == len(unique)


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_scoring_fans_out_to_workers_with_the_same_scores(tmp_path, cranfield_dir, tiny_cross_encoder_dir,
                                                          capsys, executor, monkeypatch):
    """``--executor processes|ray``: chunks of --chunk-size pairs are scored by workers that load the teacher once
    each; the chunks go through the same batches as here, so the store holds the same bytes per score."""
    if executor == "ray":
        pytest.importorskip("ray")
    pairs = _groups(cranfield_dir, tmp_path / "groups.jsonl", 4, 6)
    base = ["score", "--dataset", str(cranfield_dir), "--groups", str(tmp_path / "groups.jsonl"),
            "--teacher", str(tiny_cross_encoder_dir), "--teacher-id", "tiny", "--max-length", "64",
            "--batch-size", "4", "--device", "cpu", "--chunk-size", "7"]
    assert main([*base, "--output", str(tmp_path / "here.db")]) == 0
    if executor == "processes":  # the workers load the teacher; this process, which only stores, does not
        from transformers import AutoModelForSequenceClassification

        def no_loading(*a, **k):
            raise AssertionError("loaded the teacher in the process that only stores")

        monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", no_loading)
    assert main([*base, "--output", str(tmp_path / "there.db"), "--executor", executor, "--workers", "2",
                 "--gpus-per-task", "0"]) == 0
    assert f"tiny: {len(pairs)} pairs, 0 already stored, {len(pairs)} scored" in capsys.readouterr().out
    assert _rows(tmp_path / "there.db", "tiny") == _rows(tmp_path / "here.db", "tiny")
    assert main([*base, "--output", str(tmp_path / "x.db"), "--executor", "processes", "--workers", "0"]) == 2


def test_score_with_two_teachers_stores_members_and_ensemble(tmp_path, cranfield_dir, tiny_cross_encoder_dir,
                                                              capsys):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    other = tmp_path / "ce-b"
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=128, num_labels=1)).save_pretrained(other)
    tok.save_pretrained(other)
    pairs = _groups(cranfield_dir, tmp_path / "groups.jsonl", 2, 3)
    n = len(pairs)
    assert main(["score", "--dataset", str(cranfield_dir), "--groups", str(tmp_path / "groups.jsonl"),
                 "--teacher", str(tiny_cross_encoder_dir), str(other), "--teacher-id", "ens",
                 "--output", str(tmp_path / "s.db"), "--max-length", "64", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [str(tiny_cross_encoder_dir), str(other), "ens"]
    assert all(f"{n} pairs, 0 already stored, {n} scored" in line for line in out)
    a, b, ens = (_rows(tmp_path / "s.db", t) for t in (str(tiny_cross_encoder_dir), str(other), "ens"))
    keys = sorted(ens)
    za = np.array([a[k] for k in keys])
    zb = np.array([b[k] for k in keys])
    expected = ((za - za.mean()) / za.std() + (zb - zb.mean()) / zb.std()) / 2
    assert np.allclose([ens[k] for k in keys], expected)
    # a --cache holds one teacher's scores: with an ensemble it was silently not used, now it is refused
    capsys.readouterr()
    assert main(["score", "--dataset", str(cranfield_dir), "--groups", str(tmp_path / "groups.jsonl"),
                 "--teacher", str(tiny_cross_encoder_dir), str(other), "--cache", str(tmp_path / "cache.db"),
                 "--output", str(tmp_path / "s2.db"), "--max-length", "64", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().endswith("--cache holds one teacher's scores, and several --teacher "
                                                    "models make an ensemble (leave --cache out, or score with "
                                                    "each teacher on its own with --cache)")
    assert not (tmp_path / "s2.db").exists() and not (tmp_path / "cache.db").exists()


@pytest.mark.parametrize(("line", "message"), [
    ('{"query_id": "nope", "positive_ids": ["184"], "negative_ids": ["1"]}',
     r"groups\.jsonl:2: query id 'nope' is not in the dataset's queries"),
    ('{"query_id": "2", "positive_ids": ["12"], "negative_ids": ["1", "no-such-doc"]}',
     r"groups\.jsonl:2: document id 'no-such-doc' \(query '2'\) is not in the corpus"),
    ('{"query_id": "2", "positive_ids": "12", "negative_ids": []}',
     r"groups\.jsonl:2: positive_ids and negative_ids must be lists"),
])
def test_score_bad_groups_exit_2_with_file_and_line(tmp_path, cranfield_dir, tiny_cross_encoder_dir, capsys, line,
                                                   message):
    groups = tmp_path / "groups.jsonl"
    groups.write_text('{"query_id": "1", "positive_ids": ["184"], "negative_ids": ["1", "2"]}\n' + line + "\n")
    code = main(["score", "--dataset", str(cranfield_dir), "--groups", str(groups), "--teacher",
                 str(tiny_cross_encoder_dir), "--output", str(tmp_path / "s.db")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_score_refuses_empty_groups_and_non_ranking_models(tmp_path, cranfield_dir, tiny_bert_dir,
                                                           tiny_cross_encoder_dir, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    base = ["score", "--dataset", str(cranfield_dir), "--output", str(tmp_path / "s.db")]
    assert main([*base, "--groups", str(empty), "--teacher", str(tiny_cross_encoder_dir)]) == 2
    assert "holds no groups" in capsys.readouterr().err
    _groups(cranfield_dir, tmp_path / "g.jsonl", 1, 2)
    assert main([*base, "--groups", str(tmp_path / "g.jsonl"), "--teacher", str(tiny_bert_dir)]) == 2
    assert "is not a ranking model" in capsys.readouterr().err
    assert not any(tmp_path.glob("s.db*"))  # the failed command leaves no store it created
    assert main([*base, "--groups", str(tmp_path / "g.jsonl"), "--teacher", str(tmp_path / "no-model")]) == 2
    assert "model directory not found" in capsys.readouterr().err and not any(tmp_path.glob("s.db*"))
    assert main([*base, "--groups", str(tmp_path / "g.jsonl"), "--teacher", str(tiny_cross_encoder_dir),
                 "--max-length", "64", "--teacher-id", "t"]) == 0
    # the same id with another max length would mix two kinds of scores
    assert main([*base, "--groups", str(tmp_path / "g.jsonl"), "--teacher", str(tiny_cross_encoder_dir),
                 "--max-length", "32", "--teacher-id", "t"]) == 2
    assert "holds scores made with other settings (max_length: stored 64, now 32)" in capsys.readouterr().err


def _poll_count(path: Path, teacher: str) -> int:
    if not path.exists():
        return 0
    try:
        with ScoreStore(path, readonly=True) as store:
            return store.count(teacher)
    except (sqlite3.Error, UserInputError):
        return 0  # the writer is still creating the schema


def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, cranfield_dir, tiny_cross_encoder_dir,
                                                               capsys):
    pairs = _groups(cranfield_dir, tmp_path / "groups.jsonl", 6, 100)
    total = len(pairs)
    killed_store = tmp_path / "killed.db"
    args = ["score", "--dataset", str(cranfield_dir), "--groups", str(tmp_path / "groups.jsonl"),
            "--teacher", str(tiny_cross_encoder_dir), "--teacher-id", "tiny", "--max-length", "32",
            "--batch-size", "2", "--chunk-size", "64", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # commits every 20 scores (not 8,192 or half a second), so that a kill mid-run finds some, however fast
    code = ("import sys; from rankdistill.teachers import engine; engine.COMMIT_ROWS = 20; "
            "engine.COMMIT_SECONDS = 1e9; from rankdistill.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "-q", *args, "--output", str(killed_store)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _poll_count(killed_store, "tiny") < 20:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the scoring subprocess committed nothing in 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _rows(killed_store, "tiny")
    assert 20 <= len(partial) < total  # killed mid-run, with whole batches committed
    assert main([*args, "--output", str(killed_store)]) == 0  # the same command again
    assert f"{total} pairs, {len(partial)} already stored, {total - len(partial)} scored" in capsys.readouterr().out
    assert main([*args, "--output", str(tmp_path / "clean.db")]) == 0
    resumed, clean = _rows(killed_store, "tiny"), _rows(tmp_path / "clean.db", "tiny")
    assert set(resumed) == set(clean) == set(pairs)
    keys = sorted(clean)
    # equal up to float rounding: a pair's score does not depend on its batch (padding is masked)
    assert np.allclose([resumed[k] for k in keys], [clean[k] for k in keys], rtol=1e-6, atol=1e-7)
    with ScoreStore(killed_store, readonly=True) as a, ScoreStore(tmp_path / "clean.db", readonly=True) as b:
        assert a.teacher_info("tiny") == b.teacher_info("tiny")
