"""Import and export of the paper's format: triples JSONL + ``{qid: {docid: score}}`` teacher ``.json.gz``."""

from __future__ import annotations

import gzip
import json

import pytest

from rankdistill.cli import main
from rankdistill.data import Group, read_groups, write_groups
from rankdistill.errors import UserInputError
from rankdistill.mining.paper import read_paper_triples, write_paper_triples
from rankdistill.teachers.store import ScoreStore


def test_round_trip_of_single_positive_groups(tmp_path):
    groups = [Group("q1", ["d1"], ["d2", "d3"], "paper", 0), Group("q2", ["d9"], ["d1"], "paper", 0)]
    assert write_paper_triples(groups, tmp_path / "t.jsonl") == 2
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines[0] == {"query_id": "q1", "doc_id_a": "d1", "doc_id_b": ["d2", "d3"]}
    assert read_paper_triples(tmp_path / "t.jsonl") == groups


def test_several_positives_and_merging_lines_of_one_query(tmp_path):
    g = Group("q1", ["d1", "d5"], ["d2", "d3"], "bm25", 0)
    assert write_paper_triples([g], tmp_path / "first.jsonl") == 1
    assert write_paper_triples([g], tmp_path / "all.jsonl", all_positives=True) == 2
    # the two lines of q1 merge back into one group with both positives
    assert read_paper_triples(tmp_path / "all.jsonl", strategy="bm25") == [g]
    # a document that is a positive on one line and a negative on another is a positive; single ids are accepted
    (tmp_path / "mixed.jsonl").write_text(
        '{"query_id": 7, "doc_id_a": "a", "doc_id_b": ["b", "c"]}\n'
        '{"query_id": "7", "doc_id_a": "b", "doc_id_b": "d"}\n')
    assert read_paper_triples(tmp_path / "mixed.jsonl") == [Group("7", ["a", "b"], ["c", "d"], "paper", 0)]


def test_documents_judged_relevant_leave_the_negatives_of_an_import(tmp_path, cranfield_dir, capsys, caplog):
    # a line names one positive; Cranfield's train query 1 has more (184, 29 and 31 among them)
    (tmp_path / "t.jsonl").write_text('{"query_id": "1", "doc_id_a": "184", "doc_id_b": ["1", "29", "2", "31"]}\n'
                                      '{"query_id": "2", "doc_id_a": "12", "doc_id_b": ["4", "5"]}\n')
    assert read_paper_triples(tmp_path / "t.jsonl")[0].negative_ids == ["1", "29", "2", "31"]  # no qrels: kept
    judged = {"1": {"184", "29", "31"}, "2": {"12"}}
    with caplog.at_level("WARNING", logger="rankdistill.mining.paper"):
        groups = read_paper_triples(tmp_path / "t.jsonl", judged=judged)
    assert groups == [Group("1", ["184"], ["1", "2"], "paper", 0), Group("2", ["12"], ["4", "5"], "paper", 0)]
    assert "2 negatives of" in caplog.text
    assert main(["convert", "from-paper", "--triples", str(tmp_path / "t.jsonl"), "--output",
                 str(tmp_path / "g.jsonl"), "--dataset", str(cranfield_dir)]) == 0
    assert read_groups(tmp_path / "g.jsonl") == groups  # the dataset's qrels, of every split
    assert main(["convert", "from-paper", "--triples", str(tmp_path / "t.jsonl"), "--output",
                 str(tmp_path / "s.jsonl"), "--dataset", str(cranfield_dir), "--split", "train"]) == 0
    assert read_groups(tmp_path / "s.jsonl") == groups  # those of one split
    assert main(["convert", "from-paper", "--triples", str(tmp_path / "t.jsonl"), "--output",
                 str(tmp_path / "t2.jsonl"), "--dataset", str(cranfield_dir), "--split", "test"]) == 0
    assert read_groups(tmp_path / "t2.jsonl")[0].negative_ids == ["1", "29", "2", "31"]  # not judged in test
    assert main(["convert", "from-paper", "--triples", str(tmp_path / "t.jsonl"), "--output",
                 str(tmp_path / "x.jsonl"), "--split", "train"]) == 2
    assert "--split names a split of --dataset" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(("text", "message"), [
    ('{"query_id": "1", "doc_id_a": "2"}\n', r"t\.jsonl:1: expected an object with query_id, doc_id_a and doc_id_b"),
    ('{"query_id": "1", "doc_id_a": "2", "doc_id_b": [1]}\n{oops\n', r"t\.jsonl:2: not valid JSON"),
    ('{"query_id": "1", "doc_id_a": {"x": 1}, "doc_id_b": []}\n', r"t\.jsonl:1: doc_id_a must be a doc id"),
    ("\n", "holds no lines"),
])
def test_bad_triples_name_file_and_line(tmp_path, text, message):
    (tmp_path / "t.jsonl").write_text(text)
    with pytest.raises(UserInputError, match=message):
        read_paper_triples(tmp_path / "t.jsonl")


def test_cli_export_and_import_with_the_teacher_file(tmp_path, cranfield_dir, capsys):
    groups = [Group("1", ["184", "29"], ["1", "2", "3"], "bm25", 0), Group("2", ["12"], ["4", "5"], "bm25", 0)]
    write_groups(groups, tmp_path / "groups.jsonl")
    with ScoreStore(tmp_path / "s.db") as store:
        store.set_teacher_info("ce", {"kind": "cross", "score_space": "log_p_rel"})
        store.put("ce", [("1", "184", -0.1), ("1", "29", -0.2), ("1", "1", -3.0), ("1", "2", -2.5), ("1", "3", -4.0),
                         ("2", "12", -0.3), ("2", "4", -5.0), ("2", "5", -1.0), ("9", "9", 0.0)])
    assert main(["convert", "to-paper", "--groups", str(tmp_path / "groups.jsonl"), "--output",
                 str(tmp_path / "triples.jsonl"), "--scores", str(tmp_path / "s.db"),
                 "--teacher-output", str(tmp_path / "teacher.json.gz")]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 triples for 2 groups" in out and "wrote 8 scores of teacher ce" in out
    teacher = json.loads(gzip.decompress((tmp_path / "teacher.json.gz").read_bytes()))
    assert teacher == {"1": {"184": -0.1, "29": -0.2, "1": -3.0, "2": -2.5, "3": -4.0},
                       "2": {"12": -0.3, "4": -5.0, "5": -1.0}}  # only the groups' pairs, not ("9", "9")
    assert main(["convert", "from-paper", "--triples", str(tmp_path / "triples.jsonl"), "--output",
                 str(tmp_path / "back.jsonl"), "--strategy", "bm25", "--dataset", str(cranfield_dir),
                 "--teacher-file", str(tmp_path / "teacher.json.gz"), "--scores", str(tmp_path / "new.db"),
                 "--score-space", "log_p_rel"]) == 0
    assert "imported 8 new scores of teacher teacher (8 in all)" in capsys.readouterr().out
    # the export keeps the first positive of a group with several
    assert read_groups(tmp_path / "back.jsonl") == [Group("1", ["184"], ["1", "2", "3"], "bm25", 0), groups[1]]
    with ScoreStore(tmp_path / "new.db", readonly=True) as store:
        assert store.scores("teacher") == teacher
        assert store.teacher_info("teacher")["score_space"] == "log_p_rel"


def test_cli_convert_bad_input(tmp_path, cranfield_dir, capsys):
    (tmp_path / "t.jsonl").write_text('{"query_id": "1", "doc_id_a": "184", "doc_id_b": ["1"]}\n'
                                      '{"query_id": "1", "doc_id_a": "184", "doc_id_b": ["no-such-doc"]}\n')
    code = main(["convert", "from-paper", "--triples", str(tmp_path / "t.jsonl"), "--output",
                 str(tmp_path / "g.jsonl"), "--dataset", str(cranfield_dir)])
    assert code == 2
    assert "t.jsonl:2: document id 'no-such-doc' is not in the corpus" in capsys.readouterr().err
    assert not (tmp_path / "g.jsonl").exists()
    write_groups([Group("1", ["184"], ["1"], "bm25", 0), Group("1", ["29"], ["2"], "bm25", 0)], tmp_path / "d.jsonl")
    assert main(["convert", "to-paper", "--groups", str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "x")]) == 2
    assert "d.jsonl:2: query '1' has a second group (first on line 1)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["convert", "to-paper", "--groups", str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "x"),
                 "--teacher-output", str(tmp_path / "t.json.gz")]) == 2
    assert "--teacher-output needs --scores STORE" in capsys.readouterr().err


def test_to_paper_streams_the_groups_and_counts_the_pairs_without_a_score(tmp_path, capsys, caplog):
    """The groups are read twice, never held (MS MARCO's 500k groups of 100 ids were a list, every pair a tuple
    and every score a dict entry): the counts are what the groups say, and an empty file leaves nothing."""
    write_groups([Group("1", ["184", "29"], ["1", "2", "184"], "bm25", 0), Group("2", ["12"], ["4"], "bm25", 0)],
                 tmp_path / "groups.jsonl")
    with ScoreStore(tmp_path / "s.db") as store:
        store.put("ce", [("1", "184", -0.1), ("1", "1", -3.0), ("2", "12", -0.3), ("2", "4", -5.0)])
    to_paper = ["convert", "to-paper", "--groups", str(tmp_path / "groups.jsonl"), "--output",
                str(tmp_path / "triples.jsonl"), "--scores", str(tmp_path / "s.db"),
                "--teacher-output", str(tmp_path / "t.json.gz")]
    with caplog.at_level("WARNING"):
        assert main(to_paper) == 0
    # distinct pairs: query 1 has {184, 29, 1, 2} (184 twice), query 2 has {12, 4}: 6, of which 4 are scored
    assert "2 of the groups' 6 pairs have no score from teacher ce" in caplog.text
    assert "wrote 2 triples for 2 groups" in capsys.readouterr().out
    (tmp_path / "groups.jsonl").write_text("")
    (tmp_path / "triples.jsonl").unlink()
    (tmp_path / "t.json.gz").unlink()
    assert main(to_paper) == 2
    assert "holds no" in capsys.readouterr().err
    assert not (tmp_path / "triples.jsonl").exists() and not (tmp_path / "t.json.gz").exists()


def test_cli_convert_failures_leave_no_outputs(tmp_path, cranfield_dir, capsys):
    """A missing store, an unknown teacher id or a file that is not gzipped JSON: exit 2 with one line, and
    neither the triples/groups file nor a new store left behind."""
    write_groups([Group("1", ["184"], ["1", "2"], "bm25", 0)], tmp_path / "groups.jsonl")
    with ScoreStore(tmp_path / "s.db") as store:
        store.put("ce", [("1", "184", 1.0)])
    to_paper = ["convert", "to-paper", "--groups", str(tmp_path / "groups.jsonl"), "--output",
                str(tmp_path / "triples.jsonl"), "--teacher-output", str(tmp_path / "t.json.gz")]
    for extra, message in ((["--scores", str(tmp_path / "missing.db")], "score store not found"),
                           (["--scores", str(tmp_path / "s.db"), "--teacher-id", "nope"], "nope")):
        assert main([*to_paper, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "triples.jsonl").exists() and not (tmp_path / "t.json.gz").exists()
    assert main([*to_paper, "--scores", str(tmp_path / "s.db")]) == 0
    capsys.readouterr()

    (tmp_path / "bad.json.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    for teacher_file, message in (("bad.json.gz", "not a JSON teacher file"), ("none.json.gz", "not found")):
        code = main(["convert", "from-paper", "--triples", str(tmp_path / "triples.jsonl"), "--output",
                     str(tmp_path / "back.jsonl"), "--teacher-file", str(tmp_path / teacher_file),
                     "--scores", str(tmp_path / "new.db")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "back.jsonl").exists()
        assert not any(tmp_path.glob("new.db*"))


def test_export_scores_writes_a_stores_teacher_as_a_run_and_a_teacher_file(tmp_path, capsys):
    """A store imported from the paper's teacher file could be exported as a TREC run only from Python (the
    design's "exportable as a TREC run and as the paper's .json.gz"); `score --export-run` needs a model."""
    from rankdistill.data import read_run

    teacher = {"1": {"184": -0.1, "29": -0.2, "3": -4.0}, "2": {"12": -0.3, "5": -1.0}}
    (tmp_path / "t.json.gz").write_bytes(gzip.compress(json.dumps(teacher).encode()))
    (tmp_path / "tr.jsonl").write_text('{"query_id": "1", "doc_id_a": "184", "doc_id_b": ["29", "3"]}\n'
                                       '{"query_id": "2", "doc_id_a": "12", "doc_id_b": ["5"]}\n')
    assert main(["convert", "from-paper", "--triples", str(tmp_path / "tr.jsonl"), "--output",
                 str(tmp_path / "g.jsonl"), "--teacher-file", str(tmp_path / "t.json.gz"), "--scores",
                 str(tmp_path / "s.db")]) == 0
    assert main(["convert", "export-scores", "--scores", str(tmp_path / "s.db"), "--run", str(tmp_path / "t.trec"),
                 "--teacher-output", str(tmp_path / "back.json.gz")]) == 0
    assert "wrote 5 scores of teacher t" in capsys.readouterr().out
    assert read_run(tmp_path / "t.trec") == teacher
    lines = (tmp_path / "t.trec").read_text().splitlines()
    assert [line.split()[2:4] for line in lines[:3]] == [["184", "1"], ["29", "2"], ["3", "3"]]  # ranked by score
    assert json.loads(gzip.decompress((tmp_path / "back.json.gz").read_bytes())) == teacher
    assert main(["convert", "export-scores", "--scores", str(tmp_path / "s.db"), "--teacher-id", "nope",
                 "--run", str(tmp_path / "n.trec")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "n.trec").exists()
