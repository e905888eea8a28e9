"""Mining throughput: queries per second of the ``bm25`` and ``dense`` strategies, cold and warm.

Usage: python benchmarks/bench_mining.py [--dataset DIR] [--split train] [--group-size 16] [--depth 200]
                                         [--strategies bm25 dense] [--encoder MODEL] [--device auto]
                                         [--batch-size N] [--max-length N] [--threads N] [--json OUT]

Runs in a fresh cache folder (``RANKDISTILL_CACHE`` pointed at a temporary directory), so the first ("cold")
run of a strategy includes building what it caches: the BM25 index, or the document embeddings of the dense
encoder (default: the bundled all-MiniLM-L6-v2; loading it counts as encoding). The second ("warm") run is
what re-mining with another seed, depth or window costs: the search and the shared pool logic only. Each
figure is the wall time of ``Miner.run()`` for every training query with a judged positive; the document store
is built, the libraries imported and (on a GPU) the CUDA context started before timing. For ``dense`` the time
spent in the encoder (model loading + encoding documents and queries) is reported as ``encode_seconds`` and
its share of the run, and ``search_backend`` says whether FAISS or the exact torch search ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"


class EncodeTimer:
    """Wraps ``rankdistill.models.embeddings.encode_texts`` / ``load_sentence_transformer`` to add up the
    seconds spent in them (the dense retriever looks both up at call time)."""

    def __init__(self, device) -> None:
        from rankdistill.models import embeddings

        self.module, self.device = embeddings, device
        self.encode_seconds = self.load_seconds = 0.0
        self.texts = 0
        self._encode, self._load = embeddings.encode_texts, embeddings.load_sentence_transformer

        def encode_texts(texts, *a, **kw):
            t0 = time.perf_counter()
            try:
                return self._encode(texts, *a, **kw)
            finally:
                self._sync()
                self.encode_seconds += time.perf_counter() - t0
                self.texts += len(texts)

        def load_sentence_transformer(*a, **kw):
            t0 = time.perf_counter()
            try:
                return self._load(*a, **kw)
            finally:
                self.load_seconds += time.perf_counter() - t0

        embeddings.encode_texts = encode_texts
        embeddings.load_sentence_transformer = load_sentence_transformer

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def reset(self) -> None:
        self.encode_seconds = self.load_seconds = 0.0
        self.texts = 0


def make_context(config, dataset, split: str, device: str | None):
    """A ``MiningContext`` whose dense first stage runs on ``device``. ``MiningConfig`` has no device field;
    with ``device=None`` the library's own choice (CUDA when there is one) runs, unchanged."""
    from rankdistill.mining import MiningContext

    class Context(MiningContext):
        def retriever(self, name: str):
            if name == "dense" and name not in self._retrievers and device is not None:
                from rankdistill.retrieval.dense import DenseConfig, DenseRetriever

                c = self.config
                self._retrievers[name] = DenseRetriever(
                    self.corpus, DenseConfig(model=c.encoder, similarity=c.similarity, batch_size=c.encoder_batch_size,
                                             max_length=c.encoder_max_length, device=device,
                                             cache_dir=c.embedding_cache), show_progress=self.show_progress)
            return super().retriever(name)

    return Context(config, dataset, split, None, show_progress=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(DEFAULT_DATA), help="dataset specifier (default SciFact)")
    p.add_argument("--split", default="train")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--strategies", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    p.add_argument("--encoder", default=None, help="dense encoder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="device of the dense encoder and search (default auto: cuda when there is one)")
    p.add_argument("--batch-size", type=int, default=None, help="dense encoding batch size (default 256 GPU, 64 CPU)")
    p.add_argument("--max-length", type=int, default=None, help="dense encoder token limit (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ["RANKDISTILL_CACHE"] = tempfile.mkdtemp(prefix="bench-mining-cache-")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rankdistill.data import load_dataset
    from rankdistill.mining import Miner, MiningConfig
    from rankdistill.models import model_id

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but CUDA is not available")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    batch = args.batch_size or (256 if device.type == "cuda" else 64)
    # process start-up costs, not mining: imports and the CUDA context
    needs = {"bm25": ("rankdistill.retrieval.bm25", "bm25s", "Stemmer"),
             "dense": ("rankdistill.retrieval.dense", "sentence_transformers")}
    for module in [m for s in args.strategies for m in needs[s]]:
        importlib.import_module(module)
    if device.type == "cuda":
        torch.zeros(1, device=device)
    timer = EncodeTimer(device)

    ds = load_dataset(args.dataset)
    t0 = time.perf_counter()
    n_docs = len(ds.corpus)
    docstore_s = time.perf_counter() - t0
    result: dict = {
        "benchmark": "mining",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cuda": torch.cuda.is_available(), "device": device.type,
                    "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                    "threads": torch.get_num_threads()},
        "dataset": str(args.dataset), "split": args.split, "documents": n_docs, "docstore_build_seconds":
            round(docstore_s, 2), "group_size": args.group_size, "depth": args.depth, "strategies": {},
    }
    for strategy in args.strategies:
        config = MiningConfig(strategy, group_size=args.group_size, depth=args.depth, encoder=args.encoder,
                              encoder_batch_size=batch, encoder_max_length=args.max_length)
        entry: dict = {}
        for label in ("cold", "warm"):
            ctx = make_context(config, ds, args.split, None if args.device == "auto" else device.type)
            timer.reset()
            t0 = time.perf_counter()
            mined = Miner(ctx).run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            n = len(mined.groups)
            entry[label] = {"seconds": round(seconds, 2), "queries": n, "queries_per_second": round(n / seconds, 1)}
            if strategy == "dense":
                entry[label].update({
                    "encode_seconds": round(timer.encode_seconds, 2),
                    "model_load_seconds": round(timer.load_seconds, 2),
                    "texts_asked": timer.texts,
                    "encode_share": round(timer.encode_seconds / seconds, 3),
                    "search_and_pools_seconds": round(seconds - timer.encode_seconds, 2),
                })
                entry["search_backend"] = getattr(ctx.retriever("dense"), "backend", "faiss")
        if strategy == "dense":
            entry.update({"encoder": model_id(args.encoder), "device": device.type, "batch_size": batch,
                          "max_length": args.max_length})
        result["strategies"][strategy] = entry
        logging.warning("%s: cold %.1f s, warm %.2f s (%d queries)", strategy, entry["cold"]["seconds"],
                        entry["warm"]["seconds"], entry["warm"]["queries"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
