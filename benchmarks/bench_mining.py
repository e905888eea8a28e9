"""Mining throughput: queries per second of the ``bm25`` and ``dense`` strategies, cold and warm.

Usage: python benchmarks/bench_mining.py [--dataset DIR] [--split train] [--group-size 16] [--depth 200]
                                         [--strategies bm25 dense] [--encoder MODEL] [--json OUT]

Runs in a fresh cache folder (``RANKDISTILL_CACHE`` pointed at a temporary directory), so the first ("cold")
run of a strategy includes building what it caches: the BM25 index, or the document embeddings of the dense
encoder (default: the bundled all-MiniLM-L6-v2). The second ("warm") run is what re-mining with another seed,
depth or window costs: the search and the shared pool logic only. Each figure is the wall time of
``Miner.run()`` for every training query with a judged positive; the document store is built before timing.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(DEFAULT_DATA), help="dataset specifier (default SciFact)")
    p.add_argument("--split", default="train")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--strategies", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    p.add_argument("--encoder", default=None, help="dense encoder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ["RANKDISTILL_CACHE"] = tempfile.mkdtemp(prefix="bench-mining-cache-")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rankdistill.data import load_dataset
    from rankdistill.mining import Miner, MiningConfig, MiningContext
    from rankdistill.models import model_id

    ds = load_dataset(args.dataset)
    t0 = time.perf_counter()
    n_docs = len(ds.corpus)
    docstore_s = time.perf_counter() - t0
    result: dict = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()},
        "dataset": str(args.dataset), "split": args.split, "documents": n_docs, "docstore_build_seconds":
            round(docstore_s, 2), "group_size": args.group_size, "depth": args.depth, "strategies": {},
    }
    for strategy in args.strategies:
        config = MiningConfig(strategy, group_size=args.group_size, depth=args.depth, encoder=args.encoder)
        runs = []
        for label in ("cold", "warm"):
            ctx = MiningContext(config, ds, args.split, None, show_progress=False)
            t0 = time.perf_counter()
            mined = Miner(ctx).run()
            seconds = time.perf_counter() - t0
            runs.append((label, seconds, len(mined.groups)))
        entry = {label: {"seconds": round(s, 2), "queries": n, "queries_per_second": round(n / s, 1)}
                 for label, s, n in runs}
        if strategy == "dense":
            entry["encoder"] = model_id(args.encoder)
        result["strategies"][strategy] = entry
        logging.warning("%s: cold %.1f s, warm %.2f s (%d queries)", strategy, runs[0][1], runs[1][1], runs[1][2])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
