"""Wall time of short commands, from process start to exit: what a user waits for before any work.

Usage: python benchmarks/bench_startup.py [--data DIR] [--repeats 3] [--peer-src DIR] [--json OUT]

Each command runs ``--repeats`` times in a fresh interpreter (``python -m rankdistill.cli ...``) and the best
time is kept. The commands: three ``--help`` texts (``evaluate``, whose verb needs no heavy library;
``compare``, scipy and statsmodels; ``train``, torch), ``data info``, BM25 retrieval of SciFact's 300 test
queries (its index cached by a first, untimed run) and the evaluation of that run. ``--peer-src DIR`` runs
them again with another checkout's ``src`` first on ``sys.path`` (e.g. ``git archive <commit> src`` unpacked),
side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench_startup")


def commands(data: Path, run: Path) -> dict[str, list[str]]:
    scifact = str(data / "scifact")
    return {
        "evaluate --help": ["evaluate", "--help"],
        "compare --help": ["compare", "--help"],
        "train --help": ["train", "--help"],
        "data info": ["data", "info", scifact],
        "retrieve (bm25, 300 queries)": ["retrieve", "--dataset", scifact, "--split", "test", "--output", str(run)],
        "evaluate (300 queries)": ["evaluate", "--dataset", scifact, "--split", "test", "--run", str(run)],
    }


def best_time(argv: list[str], env: dict[str, str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rankdistill.cli", *argv], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                    help="the shared data folder (default ../shared/data)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per command; the best is kept (default 3)")
    ap.add_argument("--peer-src", default=None, help="another checkout's src folder, measured side by side")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RANKDISTILL_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        cmds = commands(Path(args.data), Path(tmp) / "bm25.trec")
        best_time(cmds["retrieve (bm25, 300 queries)"], env, 1)  # the corpus store and BM25 index, once
        rows = []
        for name, argv in cmds.items():
            row = {"command": name, "seconds": round(best_time(argv, env, args.repeats), 2)}
            if args.peer_src:
                peer_env = {**env, "PYTHONPATH": str(Path(args.peer_src).resolve())}
                row["peer_seconds"] = round(best_time(argv, peer_env, args.repeats), 2)
                row["ratio"] = round(row["peer_seconds"] / row["seconds"], 1)
            logger.info("%s", json.dumps(row))
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
