"""Memory and speed of the indexed document store on a generated corpus (default 1M passages).

Usage: python benchmarks/bench_docstore.py [--docs 1000000] [--workdir DIR] [--json OUT]

Generates an MS MARCO-like TSV corpus (``id<TAB>text``, ~55 words per passage), then in fresh processes
(1) builds the store and (2) opens it and looks up 100k random documents, recording each process's peak
resident memory (``ru_maxrss``, which counts touched pages of memory-mapped files too) and its anonymous
resident memory at the end (``RssAnon``: what must really fit in RAM; mapped pages are reclaimable).
The "peer" is the naive approach most scripts take, a Python dict of all texts, measured the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench_docstore")

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will can more other about "
         "flutter wing boundary layer protein cell gene patients study results effect method data model").split()


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(f"{i}\t{' '.join(rng.choices(WORDS, k=rng.randint(30, 80)))}\n")


CHILD_BUILD = """
import resource, sys, time
from rankdistill.data.docstore import DocStore
t = time.perf_counter(); s = DocStore(sys.argv[1], cache_dir=sys.argv[2]); dt = time.perf_counter() - t
print(len(s), dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

CHILD_LOOKUP = """
import random, resource, sys, time
from rankdistill.data.docstore import DocStore
s = DocStore(sys.argv[1], cache_dir=sys.argv[2]); n = len(s); rng = random.Random(1)
ids = [str(rng.randrange(n)) for _ in range(100_000)]
t = time.perf_counter(); total = sum(len(s.text(i)) for i in ids); dt = time.perf_counter() - t
anon = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("RssAnon")][0]
print(100_000 / dt, anon, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

CHILD_DICT = """
import random, resource, sys, time
t = time.perf_counter()
docs = {}
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        i, text = line.rstrip("\\n").split("\\t", 1); docs[i] = text
dt = time.perf_counter() - t
anon = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("RssAnon")][0]
print(anon, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def child(code: str, *args: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-docstore-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{args.docs}.tsv"
    if not corpus.exists():
        t = time.perf_counter()
        generate(corpus, args.docs)
        logger.info("generated %s (%.0f MB) in %.1fs", corpus, corpus.stat().st_size / 2**20, time.perf_counter() - t)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # measure a real build
    n, build_s, build_kb = child(CHILD_BUILD, str(corpus), str(cache))
    lookups_per_s, lookup_anon_kb, lookup_kb = child(CHILD_LOOKUP, str(corpus), str(cache))
    dict_anon_kb, dict_s, dict_kb = child(CHILD_DICT, str(corpus))
    result = {
        "docs": int(n), "corpus_mb": round(corpus.stat().st_size / 2**20, 1),
        "build_seconds": round(build_s, 1), "build_peak_rss_mb": round(build_kb / 1024, 1),
        "open_and_100k_lookups_peak_rss_mb": round(lookup_kb / 1024, 1),
        "open_and_100k_lookups_anon_rss_mb": round(lookup_anon_kb / 1024, 1),
        "lookups_per_second": round(lookups_per_s),
        "peer_python_dict_load_seconds": round(dict_s, 1), "peer_python_dict_peak_rss_mb": round(dict_kb / 1024, 1),
        "peer_python_dict_anon_rss_mb": round(dict_anon_kb / 1024, 1),
        "anon_rss_ratio_dict_over_store": round(dict_anon_kb / lookup_anon_kb, 2),
        "extrapolated_8_8M_build_peak_rss_gb": round(build_kb / 1024**2 * 8.8e6 / n, 2),
    }
    logger.info(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
