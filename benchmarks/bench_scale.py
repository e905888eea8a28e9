"""Memory and time of the parts of a study that grow with MS MARCO's size, on generated data, in fresh processes.

Usage: python benchmarks/bench_scale.py [--workdir DIR] [--queries 100000] [--pool 100] [--docs 1000000]
                                        [--peer-src DIR] [--json OUT] [--only PART ...]

MS MARCO has 8.8M passages and about 500k training queries; pools of 100 make 50M (query, document) pairs.
Each part runs in a fresh interpreter and records its wall time and peak resident memory (``VmHWM``; not
``ru_maxrss``, which an exec'd child inherits from the parent it was forked from):

- ``train-data``: :func:`rankdistill.training.data.load_training_data` of ``--queries`` groups with pools of
  ``--pool`` and a teacher score for each (the scores a distillation run reads before its first step);
- ``store-missing``: which of those 10.1M pairs the score store still lacks (what scoring and mining ask
  first; a resumed run asks about pairs that are nearly all stored);
- ``mine-guard``: mining ``--queries`` queries from a TREC run of ``--pool`` candidates each with the
  false-negative guard on (a teacher asked about every candidate, here a hash of the pair instead of a model);
- ``dense-topk``: the exact torch top-100 of 2,048 queries against ``--docs`` document vectors of 384 floats
  (the search of a GPU machine without faiss);
- ``embed-cache``: 50 calls of ``encode_texts`` on 4,000 cached texts each, with a cache of ``--docs`` texts
  (what a bi-encoder teacher or the diagnostics do chunk by chunk);
- ``score-pairs``: what ``rankdistill score`` does around its model for the ``--queries`` groups (10.1M pairs):
  check the groups file, ask the store which pairs it lacks, score them (a hash of the texts' lengths in place
  of a model) into a fresh store, and export them as the paper's teacher file;
- ``import-teacher``: ``ScoreStore.import_json_gz`` of the paper's teacher file that ``score-pairs`` exported
  (10.1M scores, 51 MB gzipped) into a fresh store, as ``rankdistill convert from-paper --teacher-file`` does;
- ``bm25-index``: building the BM25 index of ``--docs`` passages of 40 words drawn from a Zipf vocabulary of
  30,000 made-up words (MS MARCO passages average 56 words), then the top-100 of 1,000 queries.

``--peer-src DIR`` runs every part a second time with another checkout's ``src`` first on ``sys.path`` (e.g. a
``git worktree`` of the commit before a change), side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench_scale")

PARTS = ("train-data", "store-missing", "mine-guard", "dense-topk", "embed-cache", "score-pairs", "import-teacher",
         "bm25-index")

PRELUDE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
work = sys.argv[2]
t0 = time.perf_counter()
"""

EPILOGUE = """
hwm = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0]  # kB, this process only
print(json.dumps({"seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": round(hwm / 1024, 1),
                  "check": check}))
"""

CHILD = {
    "train-data": """
from rankdistill.training import DataConfig, LossConfig, ModelConfig, OptimConfig, RuntimeConfig, TrainConfig
from rankdistill.training.data import load_training_data
cfg = TrainConfig(data=DataConfig(work + "/data/dataset.toml", work + "/groups.jsonl", scores=work + "/scores.db",
                                  group_size=8),
                  model=ModelConfig(arch="cross", model=work + "/model"), loss=LossConfig("kl"),
                  optim=OptimConfig(budget_docs=64), runtime=RuntimeConfig(work + "/out", progress=False)).validate()
data = load_training_data(cfg)
g = data.groups[-1]
t = data.teacher
docs = [*g.positive_ids, *g.negative_ids]
scores = t.lookup(g.query_id, docs) if hasattr(t, "lookup") else [t[g.query_id][d] for d in docs]  # peer: dicts
check = [len(data.groups), round(sum(scores), 4)]
""",
    "store-missing": """
import json as _json
from rankdistill.teachers import ScoreStore
pairs = []
with open(work + "/groups.jsonl", encoding="utf-8") as fh:
    for line in fh:
        g = _json.loads(line)
        pairs.extend((g["query_id"], d) for d in (*g["positive_ids"], *g["negative_ids"]))
pairs.append(("Q0", "D-not-scored"))
with ScoreStore(work + "/scores.db", readonly=True) as store:
    check = [len(pairs), store.missing("hash", pairs)]
""",
    "mine-guard": """
import hashlib
from rankdistill.data import load_dataset
from rankdistill.mining import Miner, MiningConfig, MiningContext

class HashTeacher:
    teacher_id = "hash"
    def get(self, pairs):
        return {p: int.from_bytes(hashlib.blake2b(("%s|%s" % p).encode(), digest_size=2).digest(), "little") / 6553.6
                for p in pairs}
    def info(self):
        return {}
    def close(self):
        pass

ds = load_dataset(work + "/data/dataset.toml")
cfg = MiningConfig(strategy="run", candidates=work + "/run.trec", group_size=8, depth=100, fn_margin=1.0)
result = Miner(MiningContext(cfg, ds, "train", HashTeacher(), show_progress=False)).run()
check = [len(result.groups), result.counts["false_negatives_dropped"]]
""",
    "dense-topk": """
import numpy as np
from rankdistill.retrieval.dense import exact_top_k
docs = np.load(work + "/vectors.npy", mmap_mode="r")
queries = np.random.default_rng(1).standard_normal((2048, docs.shape[1])).astype(np.float32)
scores, idx = exact_top_k(docs, queries, 100, device="cpu")
check = [int(idx[:, 0].sum()), round(float(scores[:, 0].sum()), 2)]
""",
    "embed-cache": """
from rankdistill.models.embeddings import encode_texts
texts = [line.rstrip("\\n") for line in open(work + "/cached-texts.txt", encoding="utf-8")]
total = 0.0
for call in range(50):
    total += float(encode_texts(texts[call * 4000:(call + 1) * 4000], work + "/model", cache_dir=work + "/emb",
                                max_length=32).sum())
check = [round(total, 2)]
""",
    "score-pairs": """
import hashlib, os
import numpy as np
from rankdistill.data import load_dataset
from rankdistill.teachers.engine import CorpusTexts, score_pairs
from rankdistill.teachers.pairs import dataset_queries, read_group_pairs
from rankdistill.teachers.store import ScoreStore, remove_store

class LengthTeacher:
    teacher_id = "lengths"
    def identity(self):
        return {"kind": "lengths"}
    def info(self):
        return {"kind": "lengths"}
    def prepare_pairs(self, queries, docs, query_ids):
        return np.array([len(q) * 31 + len(d) for q, d in zip(queries, docs)], dtype=np.float32) / 7
    def run(self, prepared):
        yield np.arange(len(prepared)), prepared

ds = load_dataset(work + "/data/dataset.toml")
queries = dataset_queries(ds, "train")
gp = read_group_pairs(work + "/groups.jsonl", queries, ds.corpus)
pairs = gp if hasattr(gp, "blocks") else gp.pairs  # the peer: a list of every pair
db = work + "/score-part.db"
remove_store(db)
with ScoreStore(db) as store:
    report = score_pairs(LengthTeacher(), pairs, CorpusTexts(queries, ds.corpus), store, show_progress=False)
    store.export_json_gz(work + "/score-part.json.gz", "lengths", pairs)
remove_store(db)
with open(work + "/score-part.json.gz", "rb") as fh:
    check = [report.requested, report.scored, hashlib.sha1(fh.read()).hexdigest()]
""",
    "import-teacher": """
from rankdistill.teachers.store import ScoreStore, remove_store
db = work + "/import-part.db"
remove_store(db)
with ScoreStore(db) as store:
    new = store.import_json_gz(work + "/score-part.json.gz", "paper")
    first = next(store.iter_rows("paper"))
remove_store(db)
check = [new, first[0], first[1], first[2]]
""",
    "bm25-index": """
import hashlib
from rankdistill.data import load_dataset
from rankdistill.retrieval.bm25 import BM25Retriever
ds = load_dataset(work + "/zipf/dataset.toml")
bm25 = BM25Retriever(ds.corpus, cache=False)
built = round(time.perf_counter() - t0, 1)
run = bm25.search(dict(ds.all_queries("test")), k=100)
check = [built, hashlib.sha1(json.dumps([[q, list(r.items())] for q, r in sorted(run.items())]).encode()).hexdigest()]
""",
}


def _tiny_model(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rankdistill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(None))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(out)
    tok.save_pretrained(out)


def prepare(work: Path, queries: int, pool: int, docs: int, parts: tuple[str, ...]) -> None:
    """Generate what the parts read (once per work folder and size)."""
    import numpy as np

    from rankdistill.data.groups import Group, write_groups
    from rankdistill.teachers import ScoreStore

    rng = random.Random(0)
    data = work / "data"
    if not (data / "dataset.toml").exists():
        data.mkdir(parents=True, exist_ok=True)
        with open(data / "corpus.tsv", "w", encoding="utf-8") as fh:
            for i in range(docs):
                fh.write(f"D{i}\tpassage {i} " + " ".join(rng.choices(("wing", "flutter", "protein", "cell",
                                                                         "layer", "gene"), k=8)) + "\n")
        with open(data / "queries.tsv", "w", encoding="utf-8") as fh:
            fh.writelines(f"Q{q}\tquery {q}\n" for q in range(queries))
        with open(data / "qrels.txt", "w", encoding="utf-8") as fh:
            fh.writelines(f"Q{q} 0 D{q * 7 % docs} 1\n" for q in range(queries))
        (data / "dataset.toml").write_text('name = "scale"\ncorpus = "corpus.tsv"\n\n[splits.train]\n'
                                           'queries = "queries.tsv"\nqrels = "qrels.txt"\n')
        logger.info("generated %d documents and %d queries in %s", docs, queries, data)
    if not (work / "model").exists():
        _tiny_model(work / "model")

    def pool_of(q: int) -> list[str]:
        r = random.Random(q)
        return [f"D{d}" for d in r.sample(range(docs), pool + 1) if d != q * 7 % docs][:pool]

    if {"train-data", "store-missing", "score-pairs"} & set(parts) and not (work / "scores.db").exists():
        write_groups((Group(f"Q{q}", [f"D{q * 7 % docs}"], pool_of(q), "random", 0) for q in range(queries)),
                     work / "groups.jsonl")
        with ScoreStore(work / "scores.tmp.db") as store:
            for start in range(0, queries, 10_000):
                store.put("hash", ((f"Q{q}", d, float(hash((q, d)) % 1000) / 100)
                                   for q in range(start, min(queries, start + 10_000))
                                   for d in [f"D{q * 7 % docs}", *pool_of(q)]))
            store.set_teacher_info("hash", {"model": "hash", "score": "logit"})
        (work / "scores.tmp.db").rename(work / "scores.db")
        logger.info("wrote %d groups and their %d scores", queries, queries * (pool + 1))
    if "mine-guard" in parts and not (work / "run.trec").exists():
        with open(work / "run.tmp", "w", encoding="utf-8") as fh:
            for q in range(queries):
                fh.writelines(f"Q{q} Q0 {d} {r + 1} {100 - r} gen\n" for r, d in enumerate(pool_of(q)))
        (work / "run.tmp").rename(work / "run.trec")
    if "dense-topk" in parts and not (work / "vectors.npy").exists():
        vecs = np.lib.format.open_memmap(work / "vectors.tmp.npy", mode="w+", dtype=np.float32, shape=(docs, 384))
        for start in range(0, docs, 100_000):
            vecs[start:start + 100_000] = np.random.default_rng(start).standard_normal(
                (min(docs, start + 100_000) - start, 384)).astype(np.float32)
        vecs.flush()
        del vecs
        (work / "vectors.tmp.npy").rename(work / "vectors.npy")
    if "embed-cache" in parts and not (work / "cached-texts.txt").exists():
        _fill_embedding_cache(work, docs)
    if "bm25-index" in parts and not (work / "zipf" / "dataset.toml").exists():
        _zipf_corpus(work / "zipf", docs)


def _zipf_corpus(out: Path, n: int) -> None:
    """``n`` passages of 40 words and 1,000 queries of 4, drawn from a Zipf vocabulary of 30,000 made-up words,
    with the document store built (as a cached corpus is before an index is)."""
    import numpy as np

    from rankdistill.data import load_dataset

    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pa", "den", "gor", "bel"]
    words = np.array(["".join(syllables[s] for s in rng.integers(0, len(syllables), 4)) + str(i % 10)
                      for i in range(30_000)])
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.tsv", "w", encoding="utf-8") as fh:
        for start in range(0, n, 100_000):
            rows = rng.choice(len(words), size=(min(n, start + 100_000) - start, 40), p=p)
            fh.writelines(f"P{start + i}\t{' '.join(words[r])}\n" for i, r in enumerate(rows))
    rows = rng.choice(len(words), size=(1000, 4), p=p)
    (out / "queries.tsv").write_text("".join(f"Z{i}\t{' '.join(words[r])}\n" for i, r in enumerate(rows)),
                                     encoding="utf-8")
    (out / "qrels.txt").write_text("".join(f"Z{i} 0 P{i} 1\n" for i in range(1000)), encoding="utf-8")
    (out / "dataset.toml").write_text('name = "zipf"\ncorpus = "corpus.tsv"\n\n[splits.test]\n'
                                      'queries = "queries.tsv"\nqrels = "qrels.txt"\n')
    load_dataset(out / "dataset.toml").corpus.ids()
    logger.info("generated %d Zipf passages in %s", n, out)


def _fill_embedding_cache(work: Path, n: int) -> None:
    """An embedding cache of ``n`` texts for the tiny model (random vectors under the texts' real keys)."""
    import numpy as np

    from rankdistill.models.embeddings import EmbeddingCache, model_id, model_key, text_key

    model = str(work / "model")
    cache = EmbeddingCache(work / "emb", model_key(model, 32, False),
                           meta={"model": model_id(model), "max_length": 32, "normalize": False})
    texts = [f"cached text {i}" for i in range(n)]
    for start in range(0, n, 50_000):
        chunk = texts[start:start + 50_000]
        cache.add([text_key(t) for t in chunk],
                  np.random.default_rng(start).standard_normal((len(chunk), 32)).astype(np.float32))
    rng = random.Random(2)
    (work / "cached-texts.txt").write_text("".join(texts[rng.randrange(n)] + "\n" for _ in range(200_000)),
                                           encoding="utf-8")


def run_part(part: str, src: Path, work: Path) -> dict:
    code = PRELUDE + CHILD[part] + EPILOGUE
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(work)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--pool", type=int, default=100)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--peer-src", default=None, help="another checkout's src folder, measured side by side")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    prepare(work, args.queries, args.pool, args.docs, tuple(args.only))
    logger.info("inputs ready in %.0fs (%s)", time.perf_counter() - t, work)
    ours = Path(__file__).resolve().parents[1] / "src"
    result: dict = {"queries": args.queries, "pool": args.pool, "docs": args.docs, "parts": {}}
    for part in args.only:
        row = {"rankdistill": run_part(part, ours, work)}
        if args.peer_src:
            row["peer"] = run_part(part, Path(args.peer_src).resolve(), work)
        result["parts"][part] = row
        logger.info("%s: %s", part, json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
