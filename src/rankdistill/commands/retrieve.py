"""``rankdistill retrieve``: first-stage retrieval into a TREC run."""

from __future__ import annotations

import argparse
import logging
import time

from rankdistill.commands.common import add_dataset_args, declare_outputs, open_dataset
from rankdistill.data.runs import run_tag, write_run
from rankdistill.errors import UserInputError

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("retrieve", help="retrieve the top-k documents per query into a TREC run",
                       description="First-stage retrieval into a TREC run file: BM25 through bm25s, or exact "
                                   "dense retrieval (FAISS inner product, or a torch top-k where faiss is not "
                                   "installed) with a bi-encoder.")
    add_dataset_args(p)
    p.add_argument("--retriever", default="bm25", choices=["bm25", "dense"],
                   help="first-stage retriever (default bm25)")
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="dense: bi-encoder directory or name (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--similarity", choices=("dot", "cosine"), default="dot", help="dense: score (default dot)")
    p.add_argument("--batch-size", type=int, default=64, help="dense: encoding batch size (default 64)")
    p.add_argument("--max-length", type=int, default=None, help="dense: token limit (default: the model's)")
    p.add_argument("--embedding-cache", default=None, metavar="DIR",
                   help="dense: embedding cache folder (default: $RANKDISTILL_CACHE/embeddings)")
    p.add_argument("--k", type=int, default=100, help="documents per query (default 100)")
    p.add_argument("--k1", type=float, default=1.2, help="BM25 k1 (default 1.2)")
    p.add_argument("--b", type=float, default=0.75, help="BM25 b (default 0.75)")
    p.add_argument("--output", required=True, metavar="RUN", help="TREC run file to write")
    p.add_argument("--tag", default=None, help="run tag (default: the retriever name)")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("model",), output="file", embedding_cache="folder")


def run(args: argparse.Namespace) -> int:
    """Retrieve the top ``--k`` documents of every query of the split and write them as a TREC run."""
    if args.k < 1:
        raise UserInputError(f"--k must be at least 1, got {args.k}")
    tag = run_tag(args.tag, explicit=True) if args.tag is not None else args.retriever
    if args.retriever == "bm25":
        from rankdistill.retrieval.bm25 import BM25Config

        bm25 = BM25Config(k1=args.k1, b=args.b)  # checks k1 and b, before the corpus is indexed
    else:
        from rankdistill.models import resolve_model
        from rankdistill.retrieval.dense import DenseConfig

        dense = DenseConfig(model=resolve_model(args.model), similarity=args.similarity,  # checked before encoding
                            batch_size=args.batch_size, max_length=args.max_length, cache_dir=args.embedding_cache)
    ds = open_dataset(args)
    queries = ds.queries(args.split)
    if not queries:
        files = ds.splits.get(args.split)
        raise UserInputError(f"split {args.split!r} of {ds.name} has no queries, so there is nothing to retrieve",
                             path=files.queries if files is not None else None,
                             fix="check --split and the split's queries file")
    start = time.perf_counter()
    if args.retriever == "bm25":
        from rankdistill.retrieval.bm25 import BM25Retriever

        retriever = BM25Retriever(ds.corpus, bm25)
    else:
        from rankdistill.retrieval.dense import DenseRetriever

        retriever = DenseRetriever(ds.corpus, dense, show_progress=True)
    result = retriever.search(queries, k=args.k, show_progress=True)
    write_run(result, args.output, tag=tag, k=args.k)
    logger.info("retrieved %d queries x top-%d in %.1fs -> %s", len(queries), args.k,
                time.perf_counter() - start, args.output)
    return 0
