"""The score store: idempotent writes, refusal of NaN/inf, readers while writing, exports and imports."""

from __future__ import annotations

import gzip
import json
import math
import re
import sqlite3

import numpy as np
import pytest

from rankdistill.errors import UserInputError
from rankdistill.teachers.store import ScoreStore


def test_put_is_idempotent_and_keeps_the_first_value(tmp_path):
    with ScoreStore(tmp_path / "s.db") as store:
        assert store.put("ce", [("q1", "d1", 3.5), ("q1", "d2", -1.25), ("q2", "d1", 0.0)]) == 3
        # the same pair again (other score) and one new pair: only the new one counts, the old value stays
        assert store.put("ce", [("q1", "d1", 99.0), ("q2", "d9", 2.0)]) == 1
        assert store.get("ce", "q1", "d1") == 3.5
        assert store.get("ce", "q1", "dX") is None
        assert store.count("ce") == 4
        assert len(store) == 4
        # another teacher shares nothing with the first
        assert store.put("bi", [("q1", "d1", 0.5)]) == 1
        assert store.count("ce") == 4 and store.count("bi") == 1 and len(store) == 5
        assert store.scores("ce") == {"q1": {"d1": 3.5, "d2": -1.25}, "q2": {"d1": 0.0, "d9": 2.0}}


def test_non_finite_scores_are_refused_and_nothing_of_the_batch_is_written(tmp_path):
    with ScoreStore(tmp_path / "s.db") as store:
        with pytest.raises(UserInputError, match=r"2 non-finite score\(s\), e\.g\. \(q1, d2\), \(q1, d3\)"):
            store.put("ce", [("q1", "d1", 1.0), ("q1", "d2", float("nan")), ("q1", "d3", float("inf"))])
        assert store.count() == 0


def test_get_many_and_missing_keep_order_and_drop_repeats(tmp_path):
    with ScoreStore(tmp_path / "s.db") as store:
        store.put("ce", [("q1", "d1", 1.0), ("q2", "d2", 2.0)])
        pairs = [("q2", "d3"), ("q1", "d1"), ("q2", "d3"), ("q3", "d1"), ("q2", "d2")]
        assert store.get_many("ce", pairs) == {("q1", "d1"): 1.0, ("q2", "d2"): 2.0}
        assert store.missing("ce", pairs) == [("q2", "d3"), ("q3", "d1")]
        assert store.missing("other", pairs) == [("q2", "d3"), ("q1", "d1"), ("q3", "d1"), ("q2", "d2")]
        # ids are stored as strings by put; get_many and missing find them from other types too
        store.put("ce", [(7, 8, 0.5)])
        assert store.get_many("ce", [(7, 8)]) == {("7", "8"): 0.5} and store.missing("ce", [(7, 8), (7, 9)]) == [(7, 9)]



def test_missing_reads_a_query_at_a_time_and_answers_as_the_scores_would(tmp_path, monkeypatch):
    """missing() held every stored score of the pairs asked about and a set of every pair (10 GB or more
    for a resumed 50M-pair run); it now reads doc ids a query at a time, with the answer the scores give:
    the unscored pairs in the given order, each once, whatever the ids' types."""
    import random

    rng = random.Random(5)
    rows = [(f"q{rng.randrange(30)}", f"d{rng.randrange(50)}", rng.random()) for _ in range(400)]
    pairs = [(f"q{rng.randrange(35)}", f"d{rng.randrange(55)}") for _ in range(1500)] + [(3, 4), ("3", "4"), (3, 5)]
    with ScoreStore(tmp_path / "s.db") as store:
        store.put("t", [*rows, (3, 4, 1.0)])
        have = store.get_many("t", pairs)
        want, seen = [], set()
        for q, d in pairs:
            key = (str(q), str(d))
            if key not in have and key not in seen:
                seen.add(key)
                want.append((q, d))
        monkeypatch.setattr(ScoreStore, "get_many", lambda *a: pytest.fail("missing() read the scores"))
        got = store.missing("t", pairs)
        assert got == want and (3, 5) in got and (3, 4) not in got and have
        assert len(got) == len({(str(q), str(d)) for q, d in pairs} - set(have))
        assert store.missing("none", pairs[:3]) == list(dict.fromkeys(pairs[:3]))

def test_teacher_resolution_and_info(tmp_path):
    with ScoreStore(tmp_path / "s.db") as store:
        with pytest.raises(UserInputError, match="holds no scores"):
            store.resolve_teacher(None)
        store.set_teacher_info("ce", {"model": "m", "score_space": "logit"})
        assert store.teachers() == ["ce"]  # info alone registers the teacher
        assert store.resolve_teacher(None) == "ce"
        assert store.teacher_info() == {"model": "m", "score_space": "logit"}
        store.put("bi", [("q", "d", 1.0)])
        assert store.teachers() == ["bi", "ce"]
        assert store.teacher_info("bi") == {}
        with pytest.raises(UserInputError, match=r"several teachers \(bi, ce\)"):
            store.resolve_teacher(None)
        with pytest.raises(UserInputError, match="teacher 'x' not in the score store; known: bi, ce"):
            store.resolve_teacher("x")


def test_reader_sees_committed_batches_while_the_writer_is_open(tmp_path):
    path = tmp_path / "s.db"
    writer = ScoreStore(path)
    writer.put("ce", [("q1", "d1", 1.0)])
    reader = ScoreStore(path, readonly=True)
    assert reader.count("ce") == 1
    writer.put("ce", [("q1", "d2", 2.0), ("q1", "d3", 3.0)])
    assert reader.count("ce") == 3
    with pytest.raises(sqlite3.OperationalError):  # read-only really is read-only
        reader.put("ce", [("q9", "d9", 0.0)])
    reader.close()
    writer.close()


def test_bad_store_paths_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="score store not found"):
        ScoreStore(tmp_path / "absent.db", readonly=True)
    junk = tmp_path / "junk.db"
    junk.write_text("this is not sqlite, " * 100)
    with pytest.raises(UserInputError, match="not a rankdistill score store"):
        ScoreStore(junk)
    with pytest.raises(UserInputError, match="not a file"):
        ScoreStore(tmp_path)


def test_export_run_ranks_by_score_and_restricts_to_pairs(tmp_path):
    with ScoreStore(tmp_path / "s.db") as store:
        store.put("my teacher", [("q1", "d1", 0.5), ("q1", "d2", 2.0), ("q1", "d3", 0.5), ("q2", "d1", -1.0)])
        store.export_run(tmp_path / "all.trec")
        # ties broken by doc id; spaces in the teacher id become underscores in the tag
        assert (tmp_path / "all.trec").read_text().splitlines() == [
            "q1 Q0 d2 1 2.000000 my_teacher",
            "q1 Q0 d1 2 0.500000 my_teacher",
            "q1 Q0 d3 3 0.500000 my_teacher",
            "q2 Q0 d1 1 -1.000000 my_teacher",
        ]
        store.export_run(tmp_path / "some.trec", pairs=[("q1", "d3"), ("q2", "d1"), ("q9", "d9")])
        assert (tmp_path / "some.trec").read_text().splitlines() == [
            "q1 Q0 d3 1 0.500000 my_teacher",
            "q2 Q0 d1 1 -1.000000 my_teacher",
        ]


def test_json_gz_export_is_byte_stable_and_round_trips(tmp_path):
    rows = [("q2", "d1", -1.5), ("q1", "d2", 2.0), ("q1", "d1", 0.25)]
    with ScoreStore(tmp_path / "a.db") as store:
        store.put("ce", rows)
        store.export_json_gz(tmp_path / "t1.json.gz")
        store.export_json_gz(tmp_path / "t2.json.gz")
    raw = (tmp_path / "t1.json.gz").read_bytes()
    assert raw == (tmp_path / "t2.json.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime field: zero
    assert raw[3] & 0x08 == 0  # no FNAME flag: the temporary file's name is not recorded
    assert json.loads(gzip.decompress(raw)) == {"q1": {"d1": 0.25, "d2": 2.0}, "q2": {"d1": -1.5}}
    with ScoreStore(tmp_path / "a.db") as store:  # the paper's format is gzipped whatever the file's name
        store.export_json_gz(tmp_path / "t3.json")
    assert (tmp_path / "t3.json").read_bytes() == raw
    with ScoreStore(tmp_path / "b.db") as other:
        assert other.import_json_gz(tmp_path / "t1.json.gz", "paper", info={"kind": "imported"}) == 3
        assert other.scores("paper") == {"q1": {"d1": 0.25, "d2": 2.0}, "q2": {"d1": -1.5}}
        assert other.teacher_info("paper") == {"kind": "imported"}
        assert other.import_json_gz(tmp_path / "t1.json.gz", "paper") == 0



def test_exports_stream_a_query_at_a_time_with_the_bytes_of_the_whole_dict(tmp_path, monkeypatch):
    """The exports built every score of the teacher as one dict, and the JSON as one string (50M scores at
    MS MARCO scale): they now write a query at a time, with the bytes of json.dumps / write_run of the whole
    dict, non-ASCII ids and a pairs filter included."""
    import random

    from rankdistill.data.runs import write_run

    rng = random.Random(0)
    ids = ["q10", "q2", "q\u00e9", "Q1", "q\u4e2d", "q1"]
    docs = ["d1", "d10", "d2", "d\u00fc", "D3", "d\u4e2d"]
    rows = [(q, d, round(rng.gauss(0, 2), 3)) for q in ids for d in docs if rng.random() < 0.7]
    pairs = [(q, d) for q, d, _ in rows[::3]] + [("q9", "d9")]
    with ScoreStore(tmp_path / "s.db") as store:
        store.put("t", rows)
        whole = {}
        for q, d, v in rows:
            whole.setdefault(q, {})[d] = v
        some = {}
        for q, d in pairs[:-1]:
            some.setdefault(q, {})[d] = whole[q][d]
        assert store.scores("t") == whole and store.scores("t", pairs) == some
        assert list(store.scores("t")) == sorted(whole)  # query-id order
        for name, want, kw in (("all", whole, {}), ("some", some, {"pairs": pairs})):
            store.export_json_gz(tmp_path / f"{name}.json.gz", **kw)
            assert gzip.decompress((tmp_path / f"{name}.json.gz").read_bytes()) == \
                json.dumps(want, sort_keys=True).encode()
            store.export_run(tmp_path / f"{name}.trec", **kw)
            write_run(want, tmp_path / f"{name}.ref.trec", tag="t")
            assert (tmp_path / f"{name}.trec").read_bytes() == (tmp_path / f"{name}.ref.trec").read_bytes()
        monkeypatch.setattr(ScoreStore, "iter_rows", lambda self, t: iter([("a", "d1", 1.0), ("b b", "d1", 2.0)]))
        with pytest.raises(UserInputError, match="query id 'b b' is empty or holds whitespace") as e:
            store.export_run(tmp_path / "bad" / "x.trec")
        assert str(tmp_path / "bad" / "x.trec") in str(e.value) and not (tmp_path / "bad" / "x.trec").exists()

@pytest.mark.parametrize(("content", "message"), [
    (b"[1, 2]", "expected a JSON object"),
    (b'{"q1": [1]}', "query 'q1': expected an object"),
    (b'{"q1": {"d1": "high"}}', "score 'high' is not a number"),
    (b'{"q1": {"d1": NaN}}', r"teacher\.json\.gz: query 'q1', doc 'd1': score nan is not finite \(give every score"),
    (b'{"q1": {"d1": Infinity}}', "score inf is not finite"),
    (b"{not json", "not a JSON teacher file"),
])
def test_json_gz_import_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "teacher.json.gz"
    path.write_bytes(gzip.compress(content))
    with ScoreStore(tmp_path / "s.db") as store, pytest.raises(UserInputError, match=message):
        store.import_json_gz(path, "t")


def test_a_json_object_is_read_an_item_at_a_time_as_json_loads_reads_it():
    """The teacher file's reader: the items of ``json.loads`` (order, NaN, big ints, escapes) whatever the chunk
    size, a value longer than many chunks included; malformed text names its position in the whole text."""
    import io
    import random

    from rankdistill.io import iter_object_items

    rng = random.Random(0)
    for _ in range(60):
        obj = {f"q{rng.randrange(10 ** rng.randrange(1, 6))}\u00e9\"": {
            f"d{j}": rng.choice([rng.gauss(0, 3), rng.randrange(-5, 5), 1e300, -0.0, 12345678901234567890])
            for j in range(rng.randrange(0, 6))} for _ in range(rng.randrange(0, 8))}
        text = json.dumps(obj, indent=rng.choice([None, 1]))
        for chunk in (1, 2, 7, 1 << 20):
            got = list(iter_object_items(io.StringIO(text), chunk))
            assert got == list(obj.items()), (text, chunk)
    long = {"q": {f"d{j}": j / 7 for j in range(5000)}, "r": {}}
    assert dict(iter_object_items(io.StringIO(json.dumps(long)), 16)) == long
    nan = dict(iter_object_items(io.StringIO('{"a": {"x": NaN}, "b": -Infinity}'), 3))
    assert math.isnan(nan["a"]["x"]) and nan["b"] == -math.inf
    for text, message in (("[1, 2]", "expected a JSON object at character 0"),
                          ('{"a": 1} x', "extra data after the object at character 9"),
                          ('{"a" 1}', "expected ':' at character 5"), ('{"a": 1,}', "property name"),
                          ('{"a": {"b": 12', "at character 14"), ("", "expected a JSON object at character 0"),
                          ('  \n{"a": 1, "b": [1, 2}', "at character 22")):
        for chunk in (1, 4, 100):
            with pytest.raises(ValueError, match=re.escape(message)):
                list(iter_object_items(io.StringIO(text), chunk))


def test_json_gz_import_streams_and_stores_nothing_of_a_bad_file(tmp_path):
    """A teacher file of several read chunks gives the scores of ``json.loads``; a bad query at its end, or a
    query given twice, stores nothing of it (nor the teacher's info) and names the file."""
    rng = np.random.default_rng(0)
    data = {f"q{i}": {f"d{j}": float(rng.normal()) for j in rng.choice(9000, 50, replace=False)} for i in range(900)}
    text = json.dumps(data)
    assert len(text) > 1 << 20  # more than one chunk of the reader
    (tmp_path / "t.json.gz").write_bytes(gzip.compress(text.encode()))
    with ScoreStore(tmp_path / "s.db") as store:
        assert store.import_json_gz(tmp_path / "t.json.gz", "paper", info={"kind": "imported"}) == 45_000
        assert store.scores("paper") == {q: dict(sorted(d.items())) for q, d in sorted(data.items())}
    for tail, message in ((', "q900": {"d1": "x"}}', "query 'q900', doc 'd1': score 'x' is not a number"),
                          (', "q0": {"d1": 1.0}}', "query 'q0' is given twice"),
                          (', "q900": {"d1": 1.0}', "not a JSON teacher file (expected ',' or '}' at character")):
        bad = tmp_path / "bad.json"
        bad.write_text(text[:-1] + tail, encoding="utf-8")
        with ScoreStore(tmp_path / "fresh.db") as store:
            with pytest.raises(UserInputError, match=re.escape(message)) as e:
                store.import_json_gz(bad, "paper", info={"kind": "imported"})
            assert str(bad) in str(e.value)
            assert store.count() == 0 and store.teachers() == []


def test_keep_only_drops_other_pairs_of_every_teacher_and_compacts(tmp_path):
    db = tmp_path / "s.db"
    with ScoreStore(db) as s:
        s.put("a", [(f"q{i}", f"d{j}", i + j / 100) for i in range(50) for j in range(100)])
        s.put("b", [("q0", "d0", 9.0), ("q0", "d1", 8.0), ("q1", "d5", 7.0)])
    big = db.stat().st_size
    keep = [("q0", "d0"), ("q0", "d0"), ("q1", "d5"), ("q3", "d99"), ("q9", "nowhere")]
    with ScoreStore(db) as s:
        assert s.keep_only(keep) == 5000 + 3 - 3 - 2
        assert s.count("a") == 3 and s.count("b") == 2
        assert s.get_many("a", [("q0", "d0"), ("q1", "d5"), ("q3", "d99"), ("q0", "d1")]) == \
            {("q0", "d0"): 0.0, ("q1", "d5"): 1.05, ("q3", "d99"): 3.99}
        assert s.get_many("b", [("q0", "d0"), ("q0", "d1"), ("q1", "d5")]) == {("q0", "d0"): 9.0, ("q1", "d5"): 7.0}
        assert s.keep_only(keep) == 0
    assert not (tmp_path / "s.db-wal").exists()
    assert db.stat().st_size < big / 5  # compacted (VACUUM): a few pages


def test_copy_store_over_a_killed_writers_store_gives_the_copy(tmp_path):
    """A writer killed with its log unmerged leaves ``-wal``/``-shm`` files; a plain file copy over the database
    had SQLite replay that log onto it (a malformed store, rows of neither). copy_store removes them first."""
    import os
    import signal
    import subprocess
    import sys

    from rankdistill.teachers.store import copy_store

    prior = tmp_path / "prior.db"
    with ScoreStore(prior) as s:
        s.put("t", [(f"q{i}", f"m{j}", 0.5) for i in range(30) for j in range(20)])
    db = tmp_path / "scores.db"
    copy_store(prior, db)
    child = (f"from rankdistill.teachers.store import ScoreStore\nimport sys\ns = ScoreStore({str(db)!r})\n"
             "for b in range(20):\n"
             "    s.put('t', [(f'q{i}', f'd{b}-{j}', 1.0) for i in range(30) for j in range(10)])\n"
             "print('ready', flush=True)\nsys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / "scores.db-wal").stat().st_size > 0
    copy_store(prior, db)
    with ScoreStore(db) as s:
        assert s.count() == 600
        assert s._db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert s.get_many("t", [("q0", "m0")]) == {("q0", "m0"): 0.5}


def test_a_failed_or_interrupted_command_keeps_a_new_store_that_holds_scores(tmp_path):
    """A new store is removed when the command fails before scoring anything; once it holds scores (committed
    whole) it is kept, so that a Ctrl-C'd or killed scoring run resumes (removing it lost the progress)."""
    from rankdistill.teachers.store import new_stores_removed_on_error

    empty, scored = tmp_path / "empty.db", tmp_path / "scored.db"
    with pytest.raises(ValueError), new_stores_removed_on_error(empty):
        ScoreStore(empty).close()
        raise ValueError("bad input")
    assert not any(tmp_path.glob("empty.db*"))
    with pytest.raises(KeyboardInterrupt), new_stores_removed_on_error(scored):
        with ScoreStore(scored) as store:
            store.put("t", [("q1", "d1", 1.0)])
        raise KeyboardInterrupt
    with ScoreStore(scored, readonly=True) as store:
        assert store.count() == 1
    # a new store that another job opened meanwhile (a --cache given to both) is that job's too: removing it
    # lost the scores it went on writing into the deleted file
    shared = tmp_path / "shared.db"
    with pytest.raises(ValueError), new_stores_removed_on_error(shared):
        ScoreStore(shared).close()
        other = ScoreStore(shared)  # the other job's, still open
        raise ValueError("bad input")
    assert shared.is_file()
    other.put("t", [("q1", "d1", 1.0)])
    other.close()
    with ScoreStore(shared, readonly=True) as store:
        assert store.count() == 1


def test_a_store_on_a_network_filesystem_uses_a_rollback_journal(tmp_path, monkeypatch):
    """SQLite's WAL needs shared memory that NFS, Lustre or GPFS do not give: two jobs on two nodes writing a
    shared --cache there could corrupt it."""
    from rankdistill import io as io_module
    from rankdistill.teachers import store as store_module

    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path / 'shared'} nfs4 rw 0 0\n"
                      f"tmpfs {tmp_path / 'shared' / 'local'} tmpfs rw 0 0\n")
    real_path = io_module.Path

    def path(p="", *rest):  # /proc/mounts is read through Path
        return real_path(mounts) if str(p) == "/proc/mounts" else real_path(p, *rest)

    monkeypatch.setattr(io_module, "Path", path)
    assert store_module.network_filesystem(tmp_path / "shared" / "a" / "b") == "nfs4"
    assert store_module.network_filesystem(tmp_path / "shared" / "local" / "x") is None  # the longer mount
    assert store_module.network_filesystem(tmp_path / "sharedother") is None
    # a new store there is kept when the command fails: whether a job on another node has it open cannot be told
    from rankdistill.teachers.store import new_stores_removed_on_error

    (tmp_path / "shared").mkdir()
    with pytest.raises(ValueError), new_stores_removed_on_error(tmp_path / "shared" / "new.db"):
        ScoreStore(tmp_path / "shared" / "new.db").close()
        raise ValueError("bad input")
    assert (tmp_path / "shared" / "new.db").is_file()
    (tmp_path / "local").mkdir()
    for folder, mode in (("shared", "delete"), ("local", "wal")):
        with ScoreStore(tmp_path / folder / "s.db") as s:
            assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == mode
            s.put("t", [("q", "d", 1.0)])
        with ScoreStore(tmp_path / folder / "s.db", readonly=True) as s:
            assert s.count() == 1
