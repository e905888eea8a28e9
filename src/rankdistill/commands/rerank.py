"""``rankdistill rerank``: re-rank a candidate run with a trained bi- or cross-encoder into a TREC run."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from rankdistill.commands.common import add_dataset_args, declare_outputs, open_dataset
from rankdistill.data.runs import read_run, run_tag, write_run
from rankdistill.errors import UserInputError

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("rerank", help="re-rank a candidate run with a trained student",
                       description="Score each query's candidates with a bi-encoder or cross-encoder (detected "
                                   "from the model folder) and write the re-ranked TREC run.")
    add_dataset_args(p)
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (from `rankdistill train`, or a "
                   "sentence-transformers / Hugging Face folder), or a cross-fitted teacher's folder (each query "
                   "scored by the members that did not train on it)")
    p.add_argument("--candidates", required=True, metavar="RUN", help="TREC run to re-rank")
    p.add_argument("--output", required=True, metavar="RUN", help="TREC run file to write")
    p.add_argument("--k", type=int, default=None, help="re-rank only each query's top k candidates (default all)")
    p.add_argument("--arch", choices=["bi", "cross"], default=None, help="override the detected architecture")
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts or pairs per forward pass (default 64 on a CPU, 512 on a GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--tag", default=None, help="run tag (default: the model folder's name)")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("model", "candidates"), output="file")


def run(args: argparse.Namespace) -> int:
    from rankdistill.data.docstore import unknown_ids
    from rankdistill.models.scoring import load_student, score_candidates, top_k
    from rankdistill.teachers.crossfit import is_crossfit, read_crossfit

    if args.k is not None and args.k < 1:
        raise UserInputError(f"--k must be at least 1, got {args.k}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.tag is not None:
        run_tag(args.tag, explicit=True)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise UserInputError("model folder not found", path=model_dir, fix="give the --output folder of `train`")
    ds = open_dataset(args)
    queries = ds.queries(args.split)
    candidates = top_k(read_run(args.candidates), args.k)
    foreign = [q for q in candidates if q not in queries]
    kept = {q: docs for q, docs in candidates.items() if q in queries}
    if not candidates:
        raise UserInputError("the candidates run holds no results, so there is nothing to re-rank",
                             path=args.candidates, fix="give a first-stage run, e.g. from `rankdistill retrieve`")
    if not kept:
        raise UserInputError(f"no query of the run is in split {args.split!r} of {ds.name}", path=args.candidates,
                             fix="pass the --split the run was made for")
    if foreign:  # some left out (all of them is the error above, in its one line)
        logger.warning("%d of %d candidate queries are not in split %s of %s; left out", len(foreign),
                       len(candidates), args.split, ds.name)
    candidates = kept
    unknown = sorted(set(unknown_ids(ds.corpus, (d for docs in candidates.values() for d in docs))))
    if unknown:
        raise UserInputError(f"{len(unknown)} candidate document(s) are not in the corpus of {ds.name} "
                             f"(e.g. {', '.join(unknown[:3])})", path=args.candidates,
                             fix="use a run made for this --dataset")
    missing = len([q for q in queries if q not in candidates])
    if missing:
        logger.info("%d queries of the split have no candidates", missing)
    start = time.perf_counter()
    if is_crossfit(model_dir):
        # each query by the members that did not train on it (the mean where several did not)
        plan = read_crossfit(model_dir)
        routes = {q: plan.route(q) for q in candidates}
        runs = []
        for m, member in enumerate(plan.members):
            routed = {q: docs for q, docs in candidates.items() if m in routes[q]}
            runs.append(score_candidates(load_student(member, args.arch), queries, ds.corpus, routed,
                                         batch_size=args.batch_size, device=args.device, check=False)
                        if routed else {})
        scored, what = plan.combine(runs), f"cross-fitted teacher of {len(plan.members)} members"
    else:
        model = load_student(model_dir, args.arch)
        scored = score_candidates(model, queries, ds.corpus, candidates, batch_size=args.batch_size,
                                  device=args.device, check=False)  # checked above, with the file named
        what = f"{model.arch}-encoder"
    write_run(scored, args.output, tag=args.tag or run_tag(model_dir.resolve().name))
    pairs = sum(len(d) for d in scored.values())
    logger.info("re-ranked %d queries (%d pairs) with the %s %s in %.1fs -> %s", len(scored), pairs, what,
                model_dir, time.perf_counter() - start, args.output)
    return 0
