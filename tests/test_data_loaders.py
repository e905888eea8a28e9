"""Dataset loaders on the real collections and on small hand-written files of every supported format."""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest

from rankdistill.data import load_dataset, read_qrels, read_queries
from rankdistill.data.formats import iter_corpus
from rankdistill.errors import UserInputError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_scifact_counts(scifact_dir):
    ds = load_dataset(scifact_dir)
    assert ds.split_names() == ["test", "train"]
    assert len(ds.corpus) == 5183
    assert len(ds.queries("test")) == 300
    assert sum(len(d) for d in ds.qrels("test").values()) == 339
    assert len(ds.queries("train")) == 809
    assert sum(len(d) for d in ds.qrels("train").values()) == 919


def test_cranfield_counts_and_empty_documents(cranfield_dir):
    ds = load_dataset(cranfield_dir)
    assert len(ds.corpus) == 1400
    empty = [d for d in ds.corpus.iter_docs() if not d.text.strip()]
    assert len(empty) == 2  # the collection's README says two documents have empty text


def test_trecdl_manifest_counts(trecdl_manifest):
    ds = load_dataset(trecdl_manifest)
    assert ds.name == "trec-dl-pool"
    assert len(ds.corpus) == 24884
    qrels = ds.qrels("dl19")
    assert len(qrels) == 43
    assert sum(len(d) for d in qrels.values()) == 9260
    assert ds.rel_threshold("dl19") == 2
    assert len(ds.qrels("dl20")) == 54
    cands = ds.candidates("dl19")
    assert cands is not None and len(cands) == 43 and all(len(v) == 100 for v in cands.values())


def test_docstore_lookup_matches_corpus_file(scifact_dir):
    ds = load_dataset(scifact_dir)
    first = json.loads((scifact_dir / "corpus.jsonl").open().readline())
    doc = ds.corpus[first["_id"]]
    assert doc.title == first["title"] and doc.text == first["text"]
    assert ds.corpus.text(first["_id"]) == f"{first['title']} {first['text']}"
    assert ds.corpus.ids()[0] == first["_id"]
    a, b = ds.corpus.ids(), ds.corpus.ids()  # decoded once: one string per id, however many lists ask
    assert a == b and a is not b and all(x is y for x, y in zip(a, b)) and list(ds.corpus) == a
    assert "no-such-doc" not in ds.corpus and first["_id"] in ds.corpus
    with pytest.raises(KeyError):
        ds.corpus["no-such-doc"]
    with pytest.raises(KeyError):  # ids are strings, as in a dict (was an AttributeError from inside)
        ds.corpus[int(first["_id"])]
    from rankdistill.retrieval.bm25 import BM25Retriever

    bm25 = BM25Retriever(ds.corpus)
    # the index kept on disk is mapped, not read, so a fanned-out mining's workers share one copy; it ranks the same
    again = BM25Retriever(ds.corpus)
    assert again.cached and isinstance(again.index.scores["data"], np.memmap)
    # both folders have the usual permissions, not mkdtemp's 0700 (a second user of a shared cache could not
    # read them, built them again, and failed to rename over them)
    import os

    mask = os.umask(0)
    os.umask(mask)
    store = Path(ds.corpus.dir)
    assert {oct(d.stat().st_mode & 0o777) for d in (store, *store.glob("bm25-*"))} == {oct(0o777 & ~mask)}
    queries = {"q1": "cancer cells", "q2": "vitamin D deficiency", "q3": "zzqx"}
    assert again.search(queries, k=20) == bm25.search(queries, k=20) and len(bm25.search(queries, k=20)["q1"]) == 20
    with pytest.raises(TypeError, match="queries must map query ids to texts, got list"):
        bm25.search(["cancer"], k=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be >= 0, got -5"):
        bm25.search({"q1": "cancer"}, k=-5)


def test_document_ids_are_looked_up_in_batches_as_one_at_a_time(scifact_dir, monkeypatch):
    """``DocStore.positions`` answers a batch of ids as ``_position`` answers each (absent, too long for the
    id array, not a string, empty, non-ASCII); ``unknown_ids`` keeps their order and repeats, batch by batch."""
    from rankdistill.data import docstore

    corpus = load_dataset(scifact_dir).corpus
    ids = corpus.ids()
    longest = max(ids, key=len)
    asked = [ids[7], "nope", ids[0], longest + "0", ids[-1], "", "\u00e9t\u00e9", 31715, ids[7], longest, "x" * 500]
    want = [corpus._position(d) if isinstance(d, str) else None for d in asked]
    assert corpus.positions(asked).tolist() == [-1 if p is None else p for p in want]
    assert corpus.positions(asked)[[0, 2, 4]].tolist() == [7, 0, len(ids) - 1]
    assert corpus.positions([]).tolist() == []
    unknown = ["nope", longest + "0", "", "\u00e9t\u00e9", 31715, "x" * 500]
    assert docstore.unknown_ids(corpus, asked) == unknown == docstore.unknown_ids(set(ids), asked)
    monkeypatch.setattr(docstore, "LOOKUP_BATCH", 3)
    assert docstore.unknown_ids(corpus, iter(asked * 2)) == unknown * 2
    # many small lists (a groups file's groups) are looked up together, across the batches' edges, each list
    # getting back its own unknown ids in order; an empty list too
    lists = [asked[:4], [], asked[4:5], asked[5:], [ids[1]], asked]
    got = list(docstore.with_unknown_ids(iter(lists), lambda ids: ids, corpus))
    want = [(ids_, docstore.unknown_ids(set(corpus.ids()), ids_)) for ids_ in lists]
    assert got == want and got == list(docstore.with_unknown_ids(lists, lambda ids: ids, set(corpus.ids())))
    assert [bad for _, bad in got] == [["nope", longest + "0"], [], [], ["", "\u00e9t\u00e9", 31715, "x" * 500], [],
                                       unknown]


def _write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


TREC_DOCS = """<DOC>
<DOCNO> D1 </DOCNO>
<TITLE>Wing flutter</TITLE>
<TEXT>
Flutter of <B>swept</B> wings.
</TEXT>
</DOC>
<DOC>
<DOCNO>D2</DOCNO>
<TEXT>Boundary layers.</TEXT>
</DOC>
"""

TREC_TOPICS = """<top>
<num> Number: 301
<title> International Organized Crime
<desc> Description:
Identify organizations.
</top>
<top>
<num> Number: 302 <title> Poliomyelitis and Post-Polio
</top>
"""


@pytest.mark.parametrize("gz", [False, True])
def test_manifest_with_tsv_trec_docs_topics_and_qrels(tmp_path, gz):
    sfx = ".gz" if gz else ""
    _write(tmp_path / f"docs.trec{sfx}", TREC_DOCS, gz)
    _write(tmp_path / f"topics.txt{sfx}", TREC_TOPICS, gz)
    _write(tmp_path / f"queries.tsv{sfx}", "q1\tflutter of wings\nq2\tboundary\n", gz)
    _write(tmp_path / f"qrels.txt{sfx}", "301 0 D1 2\n301 0 D2 0\n302 0 D2 1\n", gz)
    _write(tmp_path / "qrels.beir.tsv", "query-id\tcorpus-id\tscore\nq1\tD1\t1\n")
    (tmp_path / "dataset.toml").write_text(
        f'name = "tiny"\ncorpus = "docs.trec{sfx}"\n'
        f'[splits.a]\nqueries = "topics.txt{sfx}"\nqrels = "qrels.txt{sfx}"\nrel_threshold = 2\n'
        f'[splits.b]\nqueries = "queries.tsv{sfx}"\nqrels = "qrels.beir.tsv"\n')
    ds = load_dataset(tmp_path / "dataset.toml")
    assert ds.split_names() == ["a", "b"]
    assert ds.corpus["D1"].title == "Wing flutter"
    assert ds.corpus["D1"].text == "Flutter of swept wings."
    assert ds.corpus.text("D2") == "Boundary layers."
    assert ds.queries("a") == {"301": "International Organized Crime", "302": "Poliomyelitis and Post-Polio"}
    assert ds.qrels("a") == {"301": {"D1": 2, "D2": 0}, "302": {"D2": 1}}
    assert ds.rel_threshold("a") == 2 and ds.rel_threshold("b") == 1
    assert ds.queries("b") == {"q1": "flutter of wings", "q2": "boundary"}
    assert ds.qrels("b") == {"q1": {"D1": 1}}


def test_tsv_corpus_and_gzipped_beir_folder(tmp_path):
    _write(tmp_path / "corpus.jsonl.gz", '{"_id": "d1", "title": "T", "text": "x y"}\n'
                                         '{"_id": "d2", "text": "z"}\n', gz=True)
    _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "x"}\n{"_id": "q9", "text": "unjudged"}\n')
    (tmp_path / "qrels").mkdir()
    _write(tmp_path / "qrels" / "dev.tsv.gz", "query-id\tcorpus-id\tscore\nq1\td1\t1\n", gz=True)
    ds = load_dataset(tmp_path)
    assert ds.split_names() == ["dev"]
    assert len(ds.corpus) == 2 and ds.corpus.text("d2") == "z"
    assert ds.queries("dev") == {"q1": "x", "q9": "unjudged"}  # the only split: its file's queries
    docs = [d for _, d in iter_corpus(_write(tmp_path / "c.tsv", "a\tfirst\nb\tsecond\n"))]
    assert [(d.doc_id, d.text) for d in docs] == [("a", "first"), ("b", "second")]


def test_data_dir_resolution(scifact_dir, monkeypatch):
    monkeypatch.setenv("RANKDISTILL_DATA", str(scifact_dir.parent))
    assert len(load_dataset("scifact").corpus) == 5183
    with pytest.raises(UserInputError, match="not found"):
        load_dataset("no-such-collection")


# --- bad input --------------------------------------------------------------------------------------------

def test_qrels_with_wrong_field_count_names_file_and_line(tmp_path):
    p = _write(tmp_path / "q.txt", "1 0 d1 1\n1 0 d2 0\n1 d3\n")
    with pytest.raises(UserInputError) as e:
        read_qrels(p)
    assert f"{p}:3:" in str(e.value)


def test_duplicate_document_ids(tmp_path):
    p = _write(tmp_path / "c.tsv", "a\tfirst\nb\tsecond\na\tagain\n")
    (tmp_path / "q.tsv").write_text("q\tx\n")
    (tmp_path / "r.txt").write_text("q 0 a 1\n")
    (tmp_path / "d.toml").write_text('corpus = "c.tsv"\n[splits.s]\nqueries = "q.tsv"\nqrels = "r.txt"\n')
    with pytest.raises(UserInputError) as e:
        len(load_dataset(tmp_path / "d.toml").corpus)
    msg = str(e.value)
    assert "duplicate document id 'a'" in msg and "lines 1 and 3" in msg and f"{p}:3" in msg


def test_empty_query_text(tmp_path):
    p = _write(tmp_path / "q.jsonl", '{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "  "}\n')
    with pytest.raises(UserInputError, match=r"q\.jsonl:2: query '2' has empty text"):
        read_queries(p)


def test_non_utf8_bytes_are_replaced_with_one_warning(tmp_path, caplog):
    p = tmp_path / "q.tsv"
    p.write_bytes(b"1\tcaf\xe9\n2\tna\xefve\n")
    with caplog.at_level(logging.WARNING):
        queries = read_queries(p)
    assert queries == {"1": "caf\ufffd", "2": "na\ufffdve"}
    warnings = [r for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert len(warnings) == 1


def test_unknown_split_lists_known(scifact_dir):
    with pytest.raises(UserInputError, match="known splits: test, train"):
        load_dataset(scifact_dir).qrels("dev")


def test_manifest_unknown_key_and_missing_file(tmp_path):
    (tmp_path / "a.toml").write_text('corpus = "c.tsv"\ncorpse = 1\n')
    with pytest.raises(UserInputError, match="unknown key"):
        load_dataset(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('corpus = "missing.tsv"\n[splits.s]\nqueries = "q"\nqrels = "r"\n')
    with pytest.raises(UserInputError, match=r"file named by 'corpus' not found: .*missing\.tsv"):
        load_dataset(tmp_path / "b.toml")
    # a folder where a file is expected is said to be one, not "not found" / "missing"
    (tmp_path / "c.toml").write_text('corpus = "."\n[splits.s]\nqueries = "q"\nqrels = "r"\n')
    with pytest.raises(UserInputError, match=r"file named by 'corpus' is a directory: "):
        load_dataset(tmp_path / "c.toml")
    beir = tmp_path / "beir"
    (beir / "corpus.jsonl").mkdir(parents=True)
    with pytest.raises(UserInputError, match=r"corpus\.jsonl: corpus\.jsonl is a directory \(give a file\)"):
        load_dataset(beir)


TREC_TOPICS_CLOSED = """<top>
<num>1</num><title>apple pie</title>
</top>
<top>
<num> Number: 2 </num>
<title> apple pie </title>
<desc> Description: recipes </desc>
</top>
<top>
<num>Number:3</num>
<title>Topic: cherry
tart</title><desc>x</desc>
</top>
"""


def test_trec_topics_with_closing_tags(tmp_path):
    p = _write(tmp_path / "topics.txt", TREC_TOPICS_CLOSED)
    assert read_queries(p) == {"1": "apple pie", "2": "apple pie", "3": "cherry tart"}


def test_trec_topics_classic_form_without_closing_tags(tmp_path):
    p = _write(tmp_path / "topics.txt", TREC_TOPICS + "<top>\n<num> Number: 303\n<title> Topic: x < y\n"
                                                      "and z\n<desc> Description:\nd\n<narr> Narrative:\nn\n</top>\n")
    assert read_queries(p) == {"301": "International Organized Crime", "302": "Poliomyelitis and Post-Polio",
                               "303": "x < y and z"}


@pytest.mark.parametrize("rel", ["inf", "-inf", "nan", "1.5", "high"])
def test_qrels_non_integer_relevance_names_file_and_line(tmp_path, rel):
    p = _write(tmp_path / "q.txt", f"1 0 d1 1\n1 0 d2 {rel}\n")
    with pytest.raises(UserInputError) as e:
        read_qrels(p)
    assert str(e.value) == (f"{p}:2: relevance {rel!r} is not an integer "
                            "(relevance grades are integers such as 0, 1 or 2)")


def test_qrels_integral_floats_and_headerless_beir(tmp_path):
    assert read_qrels(_write(tmp_path / "a.txt", "1 0 d1 2.0\n1 0 d2 -1\n")) == {"1": {"d1": 2, "d2": -1}}
    # a BEIR file without header whose first grade is written 1.0 is data, not a header
    assert read_qrels(_write(tmp_path / "b.tsv", "q1\td1\t1.0\nq1\td2\t0\n")) == {"q1": {"d1": 1, "d2": 0}}
    p = _write(tmp_path / "c.tsv", "q1\td1\tinf\n")
    with pytest.raises(UserInputError, match=r"c\.tsv:1: relevance 'inf' is not an integer"):
        read_qrels(p)
    # a judgement repeated with its grade is harmless (Cranfield's train qrels do it); another grade is refused,
    # where the last line silently won
    assert read_qrels(_write(tmp_path / "d.txt", "q2 0 d3 2\nq2 0 d4 0\nq2 0 d3 2\n")) == {"q2": {"d3": 2, "d4": 0}}
    with pytest.raises(UserInputError, match=r"e\.txt:3: document 'd3' of query 'q2' is judged 1 here and 2 on an "
                                             r"earlier line \(keep one grade per \(query, document\)\)"):
        read_qrels(_write(tmp_path / "e.txt", "q2 0 d3 2\nq2 0 d4 0\nq2 0 d3 1\n"))


@pytest.mark.parametrize(("seed", "shown"), [('"abc"', '"abc"'), ("null", "null"), ("true", "true"),
                                             ("1.5", "1.5"), ('"3"', '"3"')])
def test_groups_seed_must_be_an_integer(tmp_path, seed, shown):
    from rankdistill.data import read_groups

    p = _write(tmp_path / "g.jsonl", '{"query_id": "q1", "positive_ids": ["d1"], "negative_ids": ["d2"], "seed": 7}\n'
                                     f'{{"query_id": "q2", "positive_ids": ["d1"], "negative_ids": ["d2"], '
                                     f'"seed": {seed}}}\n')
    with pytest.raises(UserInputError) as e:
        read_groups(p)
    assert str(e.value) == (f"{p}:2: seed must be an integer, found {shown} "
                            '(use an integer such as "seed": 0, or leave the key out)')
    good = _write(tmp_path / "ok.jsonl", '{"query_id": "q1", "positive_ids": ["d1"], "negative_ids": ["d2"], '
                                         '"seed": 7}\n{"query_id": "q2", "positive_ids": ["d1"], "negative_ids": []}\n')
    assert [g.seed for g in read_groups(good)] == [7, 0]


# --- retrieve CLI: refused before any work ----------------------------------------------------------------

def _tiny_manifest(tmp_path: Path, queries: str) -> Path:
    _write(tmp_path / "c.tsv", "d1\tapple pie\nd2\tbanana bread\nd3\tcherry tart\n")
    _write(tmp_path / "q.tsv", queries)
    _write(tmp_path / "r.txt", "q1 0 d1 1\n")
    return _write(tmp_path / "d.toml", 'name = "tiny"\ncorpus = "c.tsv"\n[splits.s]\nqueries = "q.tsv"\n'
                                       'qrels = "r.txt"\n')


def _last_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_retrieve_refuses_an_empty_query_set(tmp_path, capsys):
    from rankdistill.cli import main

    manifest = _tiny_manifest(tmp_path, "")
    out = tmp_path / "run.trec"
    assert main(["retrieve", "--dataset", str(manifest), "--split", "s", "--output", str(out)]) == 2
    assert _last_error_line(capsys).endswith(
        f"{tmp_path / 'q.tsv'}: split 's' of tiny has no queries, so there is nothing to retrieve "
        "(check --split and the split's queries file)")
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_retrieve_refuses_a_directory_output_before_any_work(tmp_path, capsys, monkeypatch):
    from rankdistill.cli import main
    from rankdistill.commands import retrieve

    def no_work(args):
        raise AssertionError("the dataset was opened before --output was checked")

    monkeypatch.setattr(retrieve, "open_dataset", no_work)
    manifest = _tiny_manifest(tmp_path, "q1\tapple\n")
    (tmp_path / "out").mkdir()
    assert main(["retrieve", "--dataset", str(manifest), "--split", "s", "--output", str(tmp_path / "out")]) == 2
    assert _last_error_line(capsys).endswith(
        f"{tmp_path / 'out'}: --output is a directory (give a file name)")
    assert list((tmp_path / "out").iterdir()) == []
    bad = tmp_path / "c.tsv" / "run.trec"
    assert main(["retrieve", "--dataset", str(manifest), "--split", "s", "--output", str(bad)]) == 2
    assert _last_error_line(capsys).endswith(
        f"{bad}: --output cannot be created: {tmp_path / 'c.tsv'} is not a directory (give a path inside a directory)")


def test_files_written_to_a_gz_name_are_gzipped_and_read_back(tmp_path):
    """Every reader takes a .gz name as gzip, so every writer makes one: a run, groups or per-query file written
    as NAME.gz was plain text under a gzip name, which no reader could open (BadGzipFile). The bytes are
    stable (no name or time in the gzip header); an error leaves nothing behind."""
    import gzip

    from rankdistill.data.groups import Group, read_groups, write_groups
    from rankdistill.data.runs import read_run, write_run
    from rankdistill.evaluation.measures import write_per_query
    from rankdistill.io import atomic_write, iter_lines

    run = {"q1": {"d1": 2.0, "d2": 1.0}}
    write_run(run, tmp_path / "r.trec.gz", tag="t")
    write_run(run, tmp_path / "r2.trec.gz", tag="t")
    write_run(run, tmp_path / "r.trec", tag="t")
    raw = (tmp_path / "r.trec.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw == (tmp_path / "r2.trec.gz").read_bytes() and raw[4:8] == bytes(4)
    assert gzip.decompress(raw) == (tmp_path / "r.trec").read_bytes()
    assert read_run(tmp_path / "r.trec.gz") == run
    groups = [Group("q1", ["d1"], ["d2", "d3"], "bm25", 0)]
    write_groups(groups, tmp_path / "g.jsonl.gz")
    assert [(g.query_id, g.negative_ids) for g in read_groups(tmp_path / "g.jsonl.gz")] == [("q1", ["d2", "d3"])]
    write_per_query({"nDCG@10": {"q1": 0.5}}, tmp_path / "pq.tsv.gz")
    assert [line for _, line in iter_lines(tmp_path / "pq.tsv.gz")] == ["query_id\tmeasure\tvalue", "q1\tnDCG@10\t0.5"]
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "bad.txt.gz") as fh:
        fh.write("half")
        raise RuntimeError
    assert not list(tmp_path.glob("*bad*")) and not list(tmp_path.glob(".*"))


def test_a_run_that_could_not_be_read_back_is_not_written(tmp_path):
    """write_run refuses what read_run would refuse (a NaN score, an id or tag with a space: a 7th column) and
    a negative k, which used to drop each query's last document; nothing is left behind."""
    from rankdistill.data.runs import read_run, run_tag, write_run
    from rankdistill.models.scoring import top_k
    from rankdistill.retrieval.fusion import reciprocal_rank_fusion

    out = tmp_path / "r.trec"
    for run, kw, message in [({"q1": {"a": math.nan, "b": 1.0}}, {}, "query q1: 1 NaN score"),
                             ({"q1": {"doc a": 1.0}}, {}, "document id 'doc a' is empty or holds whitespace"),
                             ({"q 1": {"a": 1.0}}, {}, "query id 'q 1'"),
                             ({"q1": {"a": 1.0}}, {"tag": "my run"}, "run tag 'my run'"),
                             ({"q1": {"a": 2.0, "b": 1.0}}, {"k": -1}, "k must be >= 0")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            write_run(run, out, **kw)
        assert not out.exists()
    write_run({"q1": {"a": 2.0, "b": 1.0, "c": 0.5}}, out, k=2)
    assert read_run(out) == {"q1": {"a": 2.0, "b": 1.0}}
    assert run_tag("my model") == "my_model" and run_tag("") == "run"
    with pytest.raises(UserInputError, match="run tag 'my run' is empty or holds whitespace"):
        run_tag("my run", explicit=True)
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_k({"q1": {"a": 1.0}}, -1)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        reciprocal_rank_fusion([{"q1": {"a": 1.0}}], depth=-1)


def test_a_group_given_one_string_for_its_ids_is_refused():
    from rankdistill.data.groups import Group

    with pytest.raises(TypeError, match=r"Group.positive_ids must be a list of document ids, not one string: "
                                        r"pass \['doc12'\]"):
        Group("q1", "doc12", ["d2"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Group\.negative_ids"):
        Group("q1", ["doc12"], "d2")  # type: ignore[arg-type]


@pytest.mark.parametrize(("line", "message"), [
    ('{"query_id": null, "positive_ids": ["d1"], "negative_ids": ["d2"]}', r"query_id must be a string \(or an "
                                                                          r"integer\) id, found null"),
    ('{"query_id": ["53"], "positive_ids": ["d1"], "negative_ids": ["d2"]}', 'query_id .* found \\["53"\\]'),
    ('{"query_id": "q", "positive_ids": ["d1"], "negative_ids": [null, "d2"]}', "negative_ids must be a string"),
    ('{"query_id": "q", "positive_ids": [true], "negative_ids": ["d2"]}', "positive_ids .* found true"),
    ('{"query_id": "q", "positive_ids": [1.5], "negative_ids": ["d2"]}', "positive_ids .* found 1.5"),
])
def test_ids_that_are_not_strings_or_integers_are_refused_not_stringified(tmp_path, line, message):
    """str() turned a null id into the id "None" (and a list into "['53']"), silently."""
    from rankdistill.data.groups import read_groups
    from rankdistill.mining.paper import read_paper_triples

    (tmp_path / "g.jsonl").write_text('{"query_id": 7, "positive_ids": [1], "negative_ids": ["d2"]}\n' + line + "\n")
    with pytest.raises(UserInputError, match=r"g\.jsonl:2: " + message):
        read_groups(tmp_path / "g.jsonl")
    (tmp_path / "t.jsonl").write_text('{"query_id": null, "doc_id_a": "a", "doc_id_b": ["b", null]}\n')
    with pytest.raises(UserInputError, match=r"t\.jsonl:1: query_id must be a string \(or an integer\) id, found null"):
        read_paper_triples(tmp_path / "t.jsonl")
    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "a"}\n{"_id": null, "text": "b"}\n')
    with pytest.raises(UserInputError, match=r"q\.jsonl:2: _id must be a string \(or an integer\) id, found null"):
        read_queries(tmp_path / "q.jsonl")


@pytest.mark.parametrize("kind", ["truncated", "not gzipped"])
def test_a_broken_gz_file_is_named_with_the_fix(tmp_path, capsys, kind):
    """A truncated download, or a plain file named .gz, raised EOFError / BadGzipFile from every reader."""
    from rankdistill.cli import main
    from rankdistill.data.runs import read_run

    text = "".join(f"q{i} Q0 d{j} {j + 1} {10 - j} bm25\n" for i in range(40) for j in range(10)).encode()
    path = tmp_path / "run.trec.gz"
    path.write_bytes(gzip.compress(text)[:300] if kind == "truncated" else text)
    reason = "it ends before its end-of-stream marker" if kind == "truncated" else "Not a gzipped file"
    with pytest.raises(UserInputError, match=f"run.trec.gz: not a whole gzip file \\({reason}"):
        read_run(path)
    from rankdistill.io import content_digest

    with pytest.raises(UserInputError, match=r"run\.trec\.gz: not a whole gzip file"):  # a dataset's fingerprint
        content_digest(path)
    queries = "".join(f'{{"_id": "{i}", "text": "query {i} text"}}\n' for i in range(2000)).encode()
    (tmp_path / "queries.jsonl.gz").write_bytes(gzip.compress(queries)[:2000])
    with pytest.raises(UserInputError, match=r"queries\.jsonl\.gz: not a whole gzip file"):
        read_queries(tmp_path / "queries.jsonl.gz")
    pq = tmp_path / "pq.tsv.gz"
    rows = "query_id\tmeasure\tvalue\n" + "".join(f"q{i}\tnDCG@10\t0.{i:04d}\n" for i in range(3000))
    pq.write_bytes(gzip.compress(rows.encode())[:3000] if kind == "truncated" else rows.encode())
    assert main(["compare", "--per-query", str(pq), str(pq), "--metric", "nDCG@10", "--margin", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a whole gzip file" in err[0] and err[0].endswith(
        "(compress it again, or give the uncompressed file without .gz)")


def test_a_tsv_corpus_line_without_a_tab_is_told_to_add_one(tmp_path):
    """The fix said "replace tabs inside the text with spaces" for a line that has no tab at all."""
    with pytest.raises(UserInputError, match=r"c\.tsv:2: .*found 1 field\(s\) \(separate the id from the text"):
        list(iter_corpus(_write(tmp_path / "c.tsv", "a\tfirst\nb second\n")))
    with pytest.raises(UserInputError, match=r"found 4 field\(s\) \(replace tabs inside the text with spaces\)"):
        list(iter_corpus(_write(tmp_path / "d.tsv", "a\tt\tx\ty\n")))


def test_bm25_keeps_jax_off_the_gpu_and_ranks_with_numpy(tmp_path):
    """bm25s imports JAX where it is installed and took its top-k from it: on the H200, whose JAX has CUDA, that
    gave JAX 108 of the GPU's 143 GB for the whole study, and JAX's top-k may order ties unlike numpy's. A JAX
    stand-in on the path records what is asked of it, in fresh interpreters."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "fake" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("CALLS = []\nfrom jax import lax\n")
    (fake / "lax.py").write_text(
        "import numpy as np\nimport jax\n\n"
        "def top_k(scores, k):\n"
        "    jax.CALLS.append(k)\n"
        "    scores = np.asarray(scores)\n"
        "    idx = np.argsort(-scores, kind='stable')[:k]\n"
        "    return scores[idx], idx\n")
    search = (
        "from types import SimpleNamespace\n"
        "from rankdistill.retrieval.bm25 import BM25Retriever\n"
        "texts = {'d0': 'flutter of swept wings', 'd1': 'boundary layer transition', 'd2': 'wing flutter tests'}\n"
        "corpus = SimpleNamespace(dir=None, ids=lambda: list(texts), text=texts.__getitem__)\n"
        "run = BM25Retriever(corpus, cache=False).search({'q': 'wing flutter'}, k=2)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")])}

    def python(script: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        return out.stdout.split()

    # JAX is never loaded for BM25, and the process can still import it afterwards
    assert python(search + "import sys\nloaded = 'jax' in sys.modules\nimport jax\n"
                           "print(loaded, len(jax.CALLS), ' '.join(sorted(run['q'])))\n") == ["False", "0", "d0", "d2"]
    # where JAX was loaded before, bm25s finds it (its own top-k check at import), but the search ranks with numpy
    assert python("import jax\n" + search + "print(len(jax.CALLS), ' '.join(sorted(run['q'])))\n") == [
        "1", "d0", "d2"]
