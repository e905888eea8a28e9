"""The artifact store: a stage runs once per inputs+settings; partial work is resumed, never reused."""

from __future__ import annotations

import pytest

from rankdistill.experiments.artifacts import ArtifactStore


def test_reuse_and_invalidation(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def make(value):
        def fn(work):
            calls.append(value)
            (work / "out.txt").write_text(str(value))
            return {"value": value}
        return fn

    a, reused = store.run("mine", {"k": 1}, {}, make(1))
    assert not reused and (a.path / "out.txt").read_text() == "1" and a.info == {"value": 1}
    a2, reused = store.run("mine", {"k": 1}, {}, make(99))
    assert reused and a2.hash == a.hash and calls == [1]
    b, reused = store.run("mine", {"k": 2}, {}, make(2))
    assert not reused and b.hash != a.hash
    # a downstream stage keyed on its input's hash re-runs when the input changes
    t1, _ = store.run("train", {"x": 0}, {"groups": a}, make(3))
    t2, _ = store.run("train", {"x": 0}, {"groups": b}, make(4))
    assert t1.hash != t2.hash and calls == [1, 2, 3, 4]
    assert a.manifest["versions"]["rankdistill"]
    assert a.manifest["bytes"] > 0
    # wall-clock interval of the work (the GPU's fair shares among concurrent cells are read from it)
    assert 1.7e9 < a.manifest["started"] <= t1.manifest["started"] <= t2.manifest["started"]
    assert a.manifest["finished"] == pytest.approx(a.manifest["started"] + a.manifest["seconds"], abs=2e-3)


def test_a_crashed_stage_leaves_no_artifact_and_resumes_in_the_same_workdir(tmp_path):
    store = ArtifactStore(tmp_path)

    def crash(work):
        (work / "checkpoint").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.run("train", {"s": 1}, {}, crash)
    key = store.key("train", {"s": 1}, {})
    assert store.get("train", key) is None

    def resume(work):
        assert (work / "checkpoint").read_text() == "half"
        return {"resumed": True}

    art, reused = store.run("train", {"s": 1}, {}, resume)
    assert not reused and art.info == {"resumed": True}
    assert not (tmp_path / "train" / f".{key}.partial").exists()


def test_fingerprints_follow_content_not_place_time_or_gzip(tmp_path):
    import gzip
    import os
    import shutil

    from rankdistill.io import fingerprint

    a = tmp_path / "a" / "coll"
    a.mkdir(parents=True)
    (a / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (a / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
    b = tmp_path / "b" / "coll"
    shutil.copytree(a, b)
    (b / "corpus.jsonl.gz").write_bytes(gzip.compress((a / "corpus.jsonl").read_bytes(), mtime=123))
    (b / "corpus.jsonl").unlink()
    os.utime(b / "queries.jsonl", (1, 1))
    assert fingerprint(a) == fingerprint(b)
    (b / "queries.jsonl").write_text('{"_id": "q1", "text": "z"}\n')
    assert fingerprint(a) != fingerprint(b)


def test_a_manifest_is_keyed_on_the_files_it_names(tmp_path):
    """Two manifests with the same text over different qrels were one dataset to the artifact keys (only the
    manifest's bytes were hashed); a folder whose manifest names only its own files keeps its old key."""
    import shutil
    from pathlib import Path

    from rankdistill.data.dataset import dataset_fingerprint
    from rankdistill.io import fingerprint

    def collection(folder: Path, rel: str) -> Path:
        folder.mkdir(parents=True)
        (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "y"}\n')
        (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "z"}\n')
        (folder / "qrels.txt").write_text(f"q1 0 {rel} 1\n")
        (folder / "dataset.toml").write_text('corpus = "corpus.jsonl"\n[splits.test]\nqueries = "queries.jsonl"\n'
                                             'qrels = "qrels.txt"\n')
        return folder

    a, b = collection(tmp_path / "a", "d1"), collection(tmp_path / "b", "d2")
    assert fingerprint(a / "dataset.toml") == fingerprint(b / "dataset.toml")
    assert dataset_fingerprint(a / "dataset.toml") != dataset_fingerprint(b / "dataset.toml")
    assert dataset_fingerprint(a) == fingerprint(a) != dataset_fingerprint(b)
    moved = Path(shutil.copytree(a, tmp_path / "elsewhere" / "a"))
    assert dataset_fingerprint(moved / "dataset.toml") == dataset_fingerprint(a / "dataset.toml")
    # a folder's manifest naming a file outside the folder: that file's content enters the key
    (b / "dataset.toml").write_text('corpus = "../a/corpus.jsonl"\n[splits.test]\nqueries = "queries.jsonl"\n'
                                    'qrels = "qrels.txt"\n')
    keyed = dataset_fingerprint(b)
    assert keyed["referenced"][0][0] == "../a/corpus.jsonl"
    (a / "corpus.jsonl").write_text('{"_id": "d1", "text": "changed"}\n{"_id": "d2", "text": "y"}\n')
    assert dataset_fingerprint(b) != keyed
    assert dataset_fingerprint("irds:beir/scifact/test") == {"irds": "irds:beir/scifact/test", "text": "default_text"}


def test_fingerprint_reads_every_file_of_a_large_folder(tmp_path):
    """A model folder with checkpoint-*/ subfolders sorts its top-level weights after the first 200 files; the
    fingerprint used to stop there, so retrained weights kept the old key."""
    from rankdistill.io import fingerprint

    for i in range(210):
        (tmp_path / "checkpoint-1" / f"{i:03d}").mkdir(parents=True)
        (tmp_path / "checkpoint-1" / f"{i:03d}" / "w").write_text("0")
    (tmp_path / "model.safetensors").write_bytes(b"old")
    before = fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"new")
    assert len(before["files"]) == 211 and fingerprint(tmp_path) != before


def test_a_large_files_digest_is_kept_on_disk_for_the_next_process_and_dropped_when_the_file_changes(
        tmp_path, monkeypatch):
    """Each process (each worker of a fanned-out mining) read a whole teacher or collection again to hash it."""
    import hashlib
    import os

    from rankdistill import io

    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(io, "DISK_MEMO_BYTES", 5)
    monkeypatch.setattr(io, "_DIGESTS", {})
    big, small = tmp_path / "weights.bin", tmp_path / "config.json"
    big.write_bytes(b"0123456789")
    small.write_bytes(b"{}")
    real = hashlib.blake2b(b"0123456789", digest_size=16).hexdigest()
    assert io.content_digest(big) == real
    assert not (tmp_path / "cache").exists()  # changed in the last 2 s: kept in this process only
    monkeypatch.setattr(io, "DIGEST_SETTLE_NS", -10**12)
    monkeypatch.setattr(io, "_DIGESTS", {})
    assert io.content_digest(big) == real
    assert io.content_digest(small) == hashlib.blake2b(b"{}", digest_size=16).hexdigest()
    kept = [p for p in (tmp_path / "cache" / "digests").rglob("*") if p.is_file()]
    assert [p.read_text() for p in kept] == [real + "\n"]  # the small file is not kept
    kept[0].write_text("f" * 32 + "\n")  # a new process (empty memo) reads the kept digest, not the file
    monkeypatch.setattr(io, "_DIGESTS", {})
    assert io.content_digest(big) == "f" * 32
    st = big.stat()
    big.write_bytes(b"9876543210")  # same size, mtime restored: the ctime still changes
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert io.content_digest(big) == hashlib.blake2b(b"9876543210", digest_size=16).hexdigest()
    for p in (tmp_path / "cache" / "digests").rglob("*"):
        if p.is_file():
            p.write_text("not a digest")  # a damaged memo is read past
    monkeypatch.setattr(io, "_DIGESTS", {})
    assert io.content_digest(big) == hashlib.blake2b(b"9876543210", digest_size=16).hexdigest()
    monkeypatch.setattr(io, "network_filesystem", lambda path: "nfs4")  # times there may be cached or made up
    big.write_bytes(b"0123456789")
    monkeypatch.setattr(io, "_DIGESTS", {})
    before = sorted((tmp_path / "cache" / "digests").rglob("*"))
    assert io.content_digest(big) == real and sorted((tmp_path / "cache" / "digests").rglob("*")) == before
    monkeypatch.undo()
    monkeypatch.setattr(io, "DISK_MEMO_BYTES", 5)
    monkeypatch.setattr(io, "DIGEST_SETTLE_NS", -10**12)
    (tmp_path / "not-a-folder").write_text("")  # a cache that cannot be written costs a re-read, not an error
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "not-a-folder"))
    big.write_bytes(b"abcdefghij")
    assert io.content_digest(big) == hashlib.blake2b(b"abcdefghij", digest_size=16).hexdigest()


def test_a_stage_that_fails_before_writing_leaves_no_folder_and_a_folder_without_manifest_is_replaced(tmp_path):
    """A failure before the stage wrote anything left an empty ``.partial`` folder (its key, from the bad
    settings, is never met again); a final-named folder without a manifest (the remains of a broken copy)
    made the stage's rename fail and then an assertion."""
    store = ArtifactStore(tmp_path)

    def bad(work):
        raise ValueError("bad settings")

    with pytest.raises(ValueError):
        store.run("mine", {"s": 2}, {}, bad)
    assert list((tmp_path / "mine").iterdir()) == []
    key = store.key("mine", {"s": 3}, {})
    (tmp_path / "mine" / key).mkdir()
    (tmp_path / "mine" / key / "groups.jsonl").write_text("stale")
    art, reused = store.run("mine", {"s": 3}, {}, lambda work: (work / "groups.jsonl").write_text("new") and None)
    assert not reused and art.file("groups.jsonl").read_text() == "new"


def test_finished_artifacts_lists_only_what_has_a_manifest(tmp_path):
    """One listing serves the results bundle and `run`'s clean-up after bad input: a work folder (crashed mid
    stage) and a folder without a manifest (the remains of a failure) are not finished artifacts."""
    from rankdistill.experiments.artifacts import finished_artifacts

    assert list(finished_artifacts(tmp_path / "absent")) == []
    store = ArtifactStore(tmp_path / "a")
    b, _ = store.run("mine", {"s": 2}, {}, lambda w: {"n": 2})
    a, _ = store.run("mine", {"s": 1}, {}, lambda w: {"n": 1})
    c, _ = store.run("candidates", {}, {}, lambda w: None)

    def crash(work):
        (work / "part").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.run("score", {}, {}, crash)
    assert any((tmp_path / "a" / "score").glob(".*.partial"))
    (tmp_path / "a" / "score" / "deadbeef").mkdir()
    assert [(x.stage, x.hash) for x in finished_artifacts(tmp_path / "a")] == \
        [("candidates", c.hash), *sorted([("mine", a.hash), ("mine", b.hash)])]
    assert {x.hash: x.info for x in finished_artifacts(tmp_path / "a") if x.stage == "mine"} == \
        {a.hash: {"n": 1}, b.hash: {"n": 2}}


def test_a_corrupt_manifest_is_one_line_naming_it(tmp_path):
    from rankdistill.errors import UserInputError
    from rankdistill.experiments.artifacts import finished_artifacts

    store = ArtifactStore(tmp_path)
    art, _ = store.run("mine", {}, {}, lambda w: None)
    (art.path / "manifest.json").write_text("{cut sho")
    with pytest.raises(UserInputError, match=r"manifest\.json: not a valid artifact manifest \(delete"):
        list(finished_artifacts(tmp_path))
    with pytest.raises(UserInputError, match=r"manifest\.json: not a valid artifact manifest \(delete"):
        store.get("mine", art.hash)  # the store's own lookup reads it the same way


def test_two_processes_computing_one_artifact_take_turns_and_the_second_reuses_the_first(tmp_path):
    """Two runs of one study (one started again while the first still worked) wrote into the same work folder,
    and the first to finish published a mix of both."""
    import threading

    first_started, go = threading.Event(), threading.Event()
    calls = []

    def slow(work):
        calls.append("first")
        (work / "out.txt").write_text("first, part 1\n")
        first_started.set()
        assert go.wait(30)
        with open(work / "out.txt", "a") as fh:
            fh.write("first, part 2\n")
        return {"by": "first"}

    def fast(work):
        calls.append("second")
        (work / "out.txt").write_text("second\n")
        return {"by": "second"}

    results = {}
    a = threading.Thread(target=lambda: results.update(a=ArtifactStore(tmp_path).run("s", {"x": 1}, {}, slow)))
    b = threading.Thread(target=lambda: results.update(b=ArtifactStore(tmp_path).run("s", {"x": 1}, {}, fast)))
    a.start()
    assert first_started.wait(30)
    b.start()  # its own descriptor: a flock conflicts with it as with another process's
    b.join(0.5)
    assert b.is_alive(), "the second did not wait for the first"
    go.set()
    a.join(30)
    b.join(30)
    (art_a, reused_a), (art_b, reused_b) = results["a"], results["b"]
    assert calls == ["first"] and not reused_a and reused_b and art_a.path == art_b.path
    assert (art_b.path / "out.txt").read_text() == "first, part 1\nfirst, part 2\n" and art_b.info == {"by": "first"}


def test_a_discarded_artifact_is_moved_out_of_the_way_before_its_files_go(tmp_path, monkeypatch):
    import shutil

    store = ArtifactStore(tmp_path)
    art, _ = store.run("s", {"x": 1}, {}, lambda w: (w / "f").write_text("x") and None)
    seen = []
    monkeypatch.setattr(shutil, "rmtree", lambda p, **kw: seen.append((store.get("s", art.hash), p.name)))
    store.discard(art)
    assert seen == [(None, f".{art.hash}.discard-{__import__('os').getpid()}")]  # no manifest at its name


def test_after_a_failed_holder_the_waiting_and_a_new_process_still_take_turns(tmp_path):
    """The holder removes the lock file when done: the process that waited got the lock of a file no longer
    there, and one arriving later locked a new file at once, so both worked in the same folder."""
    import threading
    import time

    a_started, go = threading.Event(), threading.Event()
    computed = []

    def fails(work):
        (work / "part").write_text("a")
        a_started.set()
        assert go.wait(30)
        raise ValueError("interrupted")

    def slow(name):
        def fn(work):
            computed.append(name)
            time.sleep(0.3)
            (work / "out.txt").write_text(name)
            return {}
        return fn

    results, errors = {}, []

    def run(name, fn):
        try:
            results[name] = ArtifactStore(tmp_path).run("s", {"x": 1}, {}, fn)
        except ValueError as e:
            errors.append(str(e))

    a = threading.Thread(target=run, args=("a", fails))
    b = threading.Thread(target=run, args=("b", slow("b")))
    a.start()
    assert a_started.wait(30)
    b.start()
    b.join(0.3)
    assert b.is_alive()
    go.set()
    a.join(30)
    c = threading.Thread(target=run, args=("c", slow("c")))
    c.start()
    b.join(30)
    c.join(30)
    assert errors == ["interrupted"] and len(computed) == 1
    assert sorted(reused for _, reused in results.values()) == [False, True]


def test_nearest_differences_name_what_keeps_a_stage_from_being_reused(tmp_path):
    """Two teachers in the store; asked about a third, the nearest one's differing settings are named (a
    mapping's fields one level down, a fingerprint as one setting), with the inputs; none for one that is
    there; None for a stage with no artifact."""
    store = ArtifactStore(tmp_path)
    groups, other_groups = (store.run("mine", {"s": s}, {}, lambda w: None)[0] for s in (1, 2))
    model = {"files": [["model.safetensors", "aaa"], ["vocab.txt", "bbb"]]}
    settings = {"recipe": {"lr": 1e-4, "loss": "lce"}, "model": model, "folds": 3}
    store.run("teacher", settings, {"groups": groups}, lambda w: None)
    store.run("teacher", {**settings, "recipe": {"lr": 2e-5, "loss": "kl"}, "folds": 2}, {"groups": groups},
              lambda w: None)
    assert store.nearest_differences("teacher", settings, {"groups": groups}) == []
    moved = {"files": [["model.safetensors", "ccc"], ["vocab.txt", "bbb"]]}
    assert store.nearest_differences("teacher", {**settings, "model": moved}, {"groups": other_groups}) == [
        "inputs.groups", "model.files"]
    assert store.nearest_differences("teacher", {**settings, "recipe": {"lr": 2e-5, "loss": "lce"}},
                                     {"groups": groups}) == ["recipe.lr"]
    assert store.nearest_differences("teacher", {**settings, "seed": 1}, {"groups": groups}) == ["seed"]
    assert store.nearest_differences("score", settings, {}) is None
