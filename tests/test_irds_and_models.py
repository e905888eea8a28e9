"""irds: datasets through a locally registered ir_datasets entry; model resolution; embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankdistill.data import load_dataset
from rankdistill.errors import UserInputError
from rankdistill.models import DEFAULT_ENCODER, bundled_model_path, model_id, resolve_model


@pytest.fixture()
def local_irds(tmp_path, monkeypatch):
    import ir_datasets

    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds-home"))
    (tmp_path / "docs.tsv").write_text("d1\tflutter of swept wings\nd2\tboundary layer transition\n")
    (tmp_path / "queries.tsv").write_text("q1\twing flutter\nq2\tboundary layers\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 2\nq2 0 d1 0\n")
    base = ir_datasets.create_dataset(docs_tsv=str(tmp_path / "docs.tsv"))
    split = ir_datasets.create_dataset(docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"),
                                       qrels_trec=str(tmp_path / "qrels.txt"))
    name = f"rankdistill-test-{tmp_path.name}"
    ir_datasets.registry.register(name, base)
    ir_datasets.registry.register(f"{name}/test", split)
    return name


def test_irds_dataset_with_splits(local_irds):
    ds = load_dataset(f"irds:{local_irds}")
    assert ds.split_names() == ["test"]
    assert ds.queries("test") == {"q1": "wing flutter", "q2": "boundary layers"}
    assert ds.qrels("test") == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}
    assert len(ds.corpus) == 2
    assert ds.corpus.text("d2") == "boundary layer transition"
    assert "d1" in ds.corpus and "zz" not in ds.corpus
    one = load_dataset(f"irds:{local_irds}/test")
    assert one.split_names() == ["test"]
    with pytest.raises(UserInputError, match="known splits: test"):
        one.qrels("dev")


def test_an_irds_subset_of_a_conventional_split_answers_to_its_name(local_irds, tmp_path):
    """irds:msmarco-passage/train/judged had the one split "judged", so mine's and train's default --split train
    failed on the design's own example; a subset id now also answers to the split it is a subset of."""
    import ir_datasets

    subset = ir_datasets.create_dataset(docs_tsv=str(tmp_path / "docs.tsv"), queries_tsv=str(tmp_path / "queries.tsv"),
                                        qrels_trec=str(tmp_path / "qrels.txt"))
    ir_datasets.registry.register(f"{local_irds}/train/judged", subset)
    ds = load_dataset(f"irds:{local_irds}/train/judged")
    assert ds.split_names() == ["judged"]  # listed once: data info, diagnostics and judged_relevant read it once
    assert ds.queries("train") is ds.queries("judged")
    assert ds.queries("train") == {"q1": "wing flutter", "q2": "boundary layers"} and ds.rel_threshold("train") == 1
    with pytest.raises(UserInputError, match=r"known splits: judged \(also as train\)"):
        ds.qrels("dev")
    assert load_dataset(f"irds:{local_irds}/test").split_names() == ["test"]  # no alias where the id is a split


def test_irds_files_that_cannot_be_fetched_are_one_line_of_bad_input(local_irds, tmp_path, capsys):
    """ir_datasets fetches a dataset's files on first use; without the network (or, here, with the files gone)
    its errors are OSErrors (requests' too), reported as one line naming the dataset and what to do, exit 2."""
    from rankdistill.cli import main

    ds = load_dataset(f"irds:{local_irds}")
    for name in ("docs.tsv", "queries.tsv", "qrels.txt"):
        (tmp_path / name).unlink()
    for read in (lambda: ds.qrels("test"), lambda: ds.queries("test"), lambda: len(ds.corpus),
                 lambda: list(ds.corpus.iter_docs())):
        with pytest.raises(UserInputError, match=f"ir_datasets could not fetch the files of '{local_irds}.*'"):
            read()
    assert main(["data", "info", f"irds:{local_irds}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rankdistill data: error: ir_datasets could not fetch the files of")
    assert "Traceback" not in "\n".join(err)


def test_irds_files_whose_every_mirror_failed_are_one_line_of_bad_input(local_irds, monkeypatch):
    """A file with mirrors (the TREC DL qrels among them) fails with ir_datasets' RuntimeError('All download
    sources failed', ...), not an OSError; other RuntimeErrors are not bad input and pass through."""
    import ir_datasets

    class Offline:
        def __init__(self, error):
            self.error = error

        def qrels_iter(self):
            raise self.error
            yield

    ds = load_dataset(f"irds:{local_irds}")
    monkeypatch.setattr(ir_datasets, "load", lambda ident: Offline(RuntimeError("All download sources failed", [])))
    with pytest.raises(UserInputError, match=r"could not fetch the files of .*\(All download sources failed\)"):
        ds.qrels("test")
    monkeypatch.setattr(ir_datasets, "load", lambda ident: Offline(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        ds.qrels("test")


def test_an_irds_corpus_answers_which_ids_it_knows_in_one_batch(local_irds, monkeypatch):
    """Checking a groups file's ids against an ir_datasets corpus fetched and decoded each document alone
    (``in``): 17 minutes or more for MS MARCO's 50M. Its docstore's get_many answers a batch together."""
    from rankdistill.data.docstore import unknown_ids, with_unknown_ids
    from rankdistill.data.irds import IrdsDocStore

    corpus = load_dataset(f"irds:{local_irds}").corpus
    asked = ["d1", "nope", "d2", 5, "d1", ""]
    assert corpus.known(asked).tolist() == [True, False, True, False, True, False]
    monkeypatch.setattr(IrdsDocStore, "__contains__", lambda self, d: pytest.fail("looked up one at a time"))
    assert unknown_ids(corpus, iter(asked)) == ["nope", 5, ""]
    assert [bad for _, bad in with_unknown_ids([asked[:2], asked[2:]], lambda ids: ids, corpus)] == [
        ["nope"], [5, ""]]


def test_an_irds_corpus_keeps_its_bm25_index_until_its_documents_change(local_irds, tmp_path, monkeypatch,
                                                                        caplog):
    """An ir_datasets corpus had no folder, so every process that opened it indexed it again (MS MARCO's 8.8M
    passages each time); its index is now kept under the cache root, keyed by its documents file."""
    from types import SimpleNamespace

    import bm25s

    from rankdistill.retrieval.bm25 import BM25Retriever

    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    corpus = load_dataset(f"irds:{local_irds}").corpus
    first = BM25Retriever(corpus)
    assert first.cached and corpus.dir.parent == tmp_path / "cache" / "irds" and corpus.dir.is_dir()
    expected = first.search({"q": "wing flutter"}, k=2)

    def no_indexing(*a, **k):
        raise AssertionError("indexed again")

    indexing = bm25s.BM25.index
    monkeypatch.setattr(bm25s.BM25, "index", no_indexing)
    again = load_dataset(f"irds:{local_irds}").corpus
    assert again.dir == corpus.dir
    assert BM25Retriever(again).search({"q": "wing flutter"}, k=2) == expected
    # an index kept under this name for another set of documents is not used: it would score the wrong ones
    monkeypatch.setattr(bm25s.BM25, "index", indexing)
    other = SimpleNamespace(dir=corpus.dir, ids=lambda: ["d2"], text=lambda d: "boundary layer transition")
    with caplog.at_level("WARNING", logger="rankdistill.retrieval.bm25"):
        mismatch = BM25Retriever(other)
    assert not mismatch.cached and "holds 2 documents, the corpus 1: indexing it again" in caplog.text
    assert list(mismatch.search({"q": "boundary layer"}, k=2)["q"]) == ["d2"]
    monkeypatch.setattr(bm25s.BM25, "index", no_indexing)
    # new documents under the same name: another folder, indexed anew
    (tmp_path / "docs.tsv").write_text("d1\tflutter of swept wings\nd2\tboundary layer transition\nd3\twings\n")
    changed = load_dataset(f"irds:{local_irds}").corpus
    assert changed.dir != corpus.dir
    with pytest.raises(AssertionError, match="indexed again"):
        BM25Retriever(changed)


def test_the_sub_datasets_of_one_irds_corpus_share_its_bm25_index(tmp_path, monkeypatch):
    """The index folder was named after the dataset asked for, so ``irds:msmarco-passage/train/judged`` and
    ``irds:msmarco-passage/dev/small`` each indexed the same 8.8M passages; it is now named after the dataset
    that owns the documents (``ir_datasets.docs_parent_id``)."""
    import bm25s
    import ir_datasets

    from rankdistill.retrieval.bm25 import BM25Retriever

    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds-home"))
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "docs.tsv").write_text("d1\tflutter of swept wings\nd2\tboundary layer transition\n")
    name = f"rankdistill-shared-{tmp_path.name}"
    base = ir_datasets.create_dataset(docs_tsv=str(tmp_path / "docs.tsv"))
    ir_datasets.registry.register(name, base)
    for split in ("train", "dev"):
        (tmp_path / f"{split}-q.tsv").write_text("q1\twing flutter\n")
        (tmp_path / f"{split}-r.txt").write_text("q1 0 d1 1\n")
        part = ir_datasets.create_dataset(queries_tsv=str(tmp_path / f"{split}-q.tsv"),
                                          qrels_trec=str(tmp_path / f"{split}-r.txt"))
        ir_datasets.registry.register(f"{name}/{split}", ir_datasets.Dataset(base, part))
    train = load_dataset(f"irds:{name}/train").corpus
    assert train.dir.name.startswith(f"{name}-")
    expected = BM25Retriever(train).search({"q": "wing flutter"}, k=2)

    def no_indexing(*a, **k):
        raise AssertionError("indexed again")

    monkeypatch.setattr(bm25s.BM25, "index", no_indexing)
    dev = load_dataset(f"irds:{name}/dev").corpus
    assert dev.dir == train.dir == load_dataset(f"irds:{name}").corpus.dir
    assert BM25Retriever(dev).search({"q": "wing flutter"}, k=2) == expected


def test_irds_unknown_id():
    with pytest.raises(UserInputError, match="ir_datasets has no dataset"):
        load_dataset("irds:no/such/dataset-xyz")


def test_default_encoder_resolves_offline():
    path = resolve_model(None)
    assert path == str(bundled_model_path()) == resolve_model(DEFAULT_ENCODER)
    assert (bundled_model_path() / "config.json").exists()
    assert model_id(None) == DEFAULT_ENCODER
    assert resolve_model("org/some-model") == "org/some-model"
    with pytest.raises(UserInputError, match="model directory not found"):
        resolve_model("./no/such/dir")


def test_a_killed_encoding_keeps_its_finished_shards(tiny_bert_dir, tmp_path, monkeypatch):
    """Vectors are saved a shard at a time: an encoding stopped in its third shard keeps the first two, and the
    next run encodes only the rest, to the same vectors as one uninterrupted run."""
    from rankdistill.models import embeddings

    texts = [f"text number {i}" for i in range(5)]
    whole = embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=False)
    monkeypatch.setattr(embeddings, "SHARD_SIZE", 2)
    st = embeddings.load_sentence_transformer(str(tiny_bert_dir))
    encode, seen = st.encode, []

    def dies_in_the_third_shard(batch, **kw):
        seen.append(list(batch))
        if len(seen) == 3:
            raise KeyboardInterrupt
        return encode(batch, **kw)

    monkeypatch.setattr(st, "encode", dies_in_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/shard-*.npy"))) == 2
    embeddings._CACHES.clear()  # as a new process sees the folder
    seen.clear()
    again = embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert seen == [texts[4:]]
    np.testing.assert_allclose(again, whole, rtol=0, atol=1e-6)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_reading_many_shards_keeps_no_file_open(tiny_bert_dir, tmp_path, monkeypatch):
    """The cache kept every shard it read memory-mapped, one open file each: at 8,192 texts a shard, MS
    MARCO's corpus (about 1,080 shards) ran out of the usual 1,024 file descriptors. Here 60 shards are read
    under a limit of 30 more files than are open."""
    import os
    import resource

    from rankdistill.models import embeddings

    monkeypatch.setattr(embeddings, "SHARD_SIZE", 1)
    texts = [f"text {i}" for i in range(60)]
    embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=tmp_path)
    embeddings._CACHES.clear()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 30, hard))
    try:
        vectors = embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert vectors.shape == (60, 32)


def test_embedding_cache_reuses_vectors(tiny_bert_dir, tmp_path, monkeypatch):
    from rankdistill.models import embeddings

    texts = ["wing flutter", "boundary layer", "wing flutter"]
    first = embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert first.shape == (3, 32) and first.dtype == np.float32
    assert np.array_equal(first[0], first[2])
    assert len(list(tmp_path.glob("*/shard-*.npy"))) == 1

    def boom(*a, **k):
        raise AssertionError("cached texts must not be re-encoded")

    monkeypatch.setattr(embeddings, "load_sentence_transformer", boom)
    again = embeddings.encode_texts(texts[:2], model=str(tiny_bert_dir), cache_dir=tmp_path)
    assert np.array_equal(again, first[:2])
    monkeypatch.undo()
    # no text: [0, dim] as documented, and one bare string is not embedded character by character
    assert embeddings.encode_texts([], model=str(tiny_bert_dir), cache_dir=tmp_path).shape == (0, 32)
    with pytest.raises(TypeError, match=r"not one string: pass \[text\]"):
        embeddings.encode_texts("wing flutter", model=str(tiny_bert_dir), cache_dir=tmp_path)


def test_encoding_draws_its_bar_only_on_a_terminal(tiny_bert_dir, capsys, monkeypatch):
    """sentence-transformers draws "Batches" whenever told to: into a log file, or a study worker's output (a
    study on the CPU logged one bar per bi-encoder cell). The bar is drawn only where stderr is a terminal, and
    it is one bar over every shard of texts (sentence-transformers' own would start again at each)."""
    import sys

    from rankdistill.models import embeddings

    embeddings.encode_texts(["wing flutter", "boundary layer"], model=str(tiny_bert_dir), cache_dir=False,
                            show_progress=True)
    assert "encoding" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(embeddings, "SHARD_SIZE", 1)
    embeddings.encode_texts(["wing flutter", "boundary layer"], model=str(tiny_bert_dir), cache_dir=False,
                            show_progress=True)
    err = capsys.readouterr().err
    assert "encoding: 100%" in err and "2.00/2.00" in err and "Batches" not in err


def test_a_token_limit_does_not_leak_into_later_encodings(tiny_bert_dir, tmp_path):
    """The loaded encoder is shared within a process: encoding at 4 tokens and then at the model's own limit
    gives what the model's own limit gives alone (once, a dense mining at 32 tokens cut a later full-length
    retrieval in the same process, and cached the cut vectors under the full-length key)."""
    from rankdistill.models import embeddings

    texts = ["wing flutter at transonic speeds over swept wings", "boundary layer transition on flat plates"]
    own = embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=False)
    cut = embeddings.encode_texts(texts, model=str(tiny_bert_dir), max_length=4, cache_dir=False)
    after = embeddings.encode_texts(texts, model=str(tiny_bert_dir), cache_dir=False)
    assert not np.allclose(cut, own)
    assert np.allclose(after, own, atol=1e-6)


def test_irds_records_without_a_text_field_take_their_default_text():
    """An MS MARCO document (doc_id, url, title, body) joined every string field, so its URL became text;
    ir_datasets' default_text() names the fields that are the document. Records with a text field, and
    records without default_text(), read as before."""
    from typing import NamedTuple

    from rankdistill.data.formats import Doc
    from rankdistill.data.irds import _doc_from

    class MsMarcoLike(NamedTuple):
        doc_id: str
        url: str
        title: str
        body: str

        def default_text(self) -> str:
            return f"{self.title} {self.body}"

    class NoTitle(NamedTuple):
        doc_id: str
        doi: str
        abstract: str

        def default_text(self) -> str:
            return self.abstract

    class Plain(NamedTuple):
        doc_id: str
        title: str
        text: str

    class Bare(NamedTuple):
        doc_id: str
        a: str
        b: str

    assert _doc_from(MsMarcoLike("D1", "http://x.org/a", "The Title", "Body text")) == Doc("D1", "The Title",
                                                                                          "Body text")
    assert _doc_from(NoTitle("D2", "10.1/x", "Abstract")) == Doc("D2", "", "Abstract")
    assert _doc_from(Plain("D3", "T", "x")) == Doc("D3", "T", "x")
    assert _doc_from(Bare("D4", "a", "b")) == Doc("D4", "", "a b")


@pytest.mark.parametrize("loader", ["encoder", "classifier", "sentence_transformer"])
def test_a_folder_that_is_not_a_model_is_one_user_error_line(tmp_path, loader):
    """transformers raises ValueError ("Unrecognized model") for a folder without a usable config.json: that was a
    traceback from train, retrieve --retriever dense, mine --strategy dense and diagnose --encoder."""
    from rankdistill.errors import UserInputError
    from rankdistill.models.backbone import load_classifier, load_encoder
    from rankdistill.models.embeddings import load_sentence_transformer

    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    load = {"encoder": load_encoder, "classifier": load_classifier,
            "sentence_transformer": load_sentence_transformer}[loader]
    with pytest.raises(UserInputError) as e:
        load(str(folder))
    message = str(e.value)
    assert message.startswith(f"cannot load model {str(folder)!r} (") and "Unrecognized model" in message
    assert "\n" not in message and message.count("(") == message.count(")")


def test_an_unreachable_hub_is_probed_once_and_then_only_the_local_cache_is_asked(monkeypatch, tmp_path,
                                                                                   tiny_bert_dir):
    """Without a network, huggingface_hub retried every request with back-off: a hub name not in the cache took
    90 s to fail. One TCP probe now switches it to offline mode; none is made for a local folder, under a proxy,
    or where HF_HUB_OFFLINE is set already."""
    import socket

    from huggingface_hub import constants

    from rankdistill.errors import UserInputError
    from rankdistill.models import backbone
    from rankdistill.models.backbone import load_encoder

    calls = []

    def unreachable(address, timeout=None):
        calls.append((address, timeout))
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    for variable in (*backbone._PROXY_VARIABLES, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example:8443")
    monkeypatch.setattr(backbone, "_HUB_PROBED", False)
    load_encoder(str(tiny_bert_dir))  # a local folder: no probe
    assert calls == [] and constants.HF_HUB_OFFLINE is False
    with pytest.raises(UserInputError, match=r"^cannot load model 'no-such-org/no-such-model' \("):
        load_encoder("no-such-org/no-such-model")
    assert calls == [(("hub.example", 8443), 3.0)] and constants.HF_HUB_OFFLINE is True
    with pytest.raises(UserInputError):
        load_encoder("no-such-org/another-model")
    assert len(calls) == 1, "probed once per process"
    # a proxy: a direct connection says nothing about the hub, so no probe and no offline switch
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(backbone, "_HUB_PROBED", False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert backbone.offline_unless_hub_reachable() is False and len(calls) == 1
    # HF_HUB_OFFLINE=0 given by the user: their choice, not probed over
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert backbone.offline_unless_hub_reachable() is False and len(calls) == 1


def test_bm25_mining_over_an_irds_corpus_fans_out_only_where_its_index_is_kept(local_irds, caplog, tmp_path,
                                                                              monkeypatch):
    """An ir_datasets corpus' BM25 index is kept under the cache root, so the workers of a fanned-out mining load
    it; where it cannot be kept (a cache root that cannot be written, or no documents file named) every worker
    would build it again, and such mining stays in this process (the random strategy, with nothing to build,
    still fans out)."""
    from rankdistill.data.irds import IrdsDocStore
    from rankdistill.experiments.executors import LocalExecutor
    from rankdistill.mining import Miner, MiningConfig, MiningContext

    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))

    def mine(strategy: str):
        config = MiningConfig(strategy=strategy, group_size=2, pool_size=1, depth=2)
        ds = load_dataset(f"irds:{local_irds}")
        return Miner(MiningContext(config, ds, "test", None, show_progress=False), executor=LocalExecutor()).run()

    assert mine("bm25").shards == 2
    # a cache root that cannot be written: the index is not kept, a warning says so, and mining stays here
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level("INFO", logger="rankdistill"):
        assert mine("bm25").shards == 0
    assert "could not keep the BM25 index" in caplog.text
    assert "is not kept on disk, so each worker would build it again" in caplog.text
    caplog.clear()
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(IrdsDocStore, "dir", property(lambda self: None))
    with caplog.at_level("INFO", logger="rankdistill.mining.miner"):
        assert mine("bm25").shards == 0
    assert "is not kept on disk, so each worker would build it again" in caplog.text
    assert mine("random").shards == 2
