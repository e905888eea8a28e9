"""``rankdistill evaluate``: score a run against a dataset split's qrels."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rankdistill.commands.common import add_dataset_args, declare_outputs, open_dataset
from rankdistill.data.runs import read_run
from rankdistill.evaluation import default_metrics, evaluate_run, write_per_query

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a TREC run with ir_measures",
                       description="Evaluate a run (means over judged queries; judged queries missing from the "
                                   "run score 0).")
    add_dataset_args(p)
    p.add_argument("--run", required=True, help="TREC run file")
    p.add_argument("--metrics", nargs="+", default=None, metavar="M",
                   help="ir_measures names, e.g. nDCG@10 'AP(rel=2)' (default: nDCG@10 plus those the dataset "
                        "implies)")
    p.add_argument("--per-query", default=None, metavar="FILE",
                   help="also write query_id<TAB>measure<TAB>value rows")
    p.add_argument("--json", action="store_true", help="print one JSON object of means on stdout")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("run",), per_query="file")


def run(args: argparse.Namespace) -> int:
    ds = open_dataset(args)
    qrels = ds.qrels(args.split)
    threshold = ds.rel_threshold(args.split)
    result_run = read_run(args.run)
    metrics = args.metrics or default_metrics(threshold)
    result = evaluate_run(result_run, qrels, metrics, threshold, corpus=ds.corpus, run_path=args.run,
                          split=args.split)
    if args.per_query:
        write_per_query(result.per_query, args.per_query)
    if args.json:
        sys.stdout.write(json.dumps(result.means) + "\n")
    else:
        width = max(len(m) for m in result.means)
        for name, value in result.means.items():
            sys.stdout.write(f"{name:<{width}}  {value:.4f}\n")
        sys.stdout.write(f"{'queries':<{width}}  {result.judged_queries}\n")
    return 0
