"""``rankdistill select``: keep the training queries whose diagnostic lies in a quantile band.

``rankdistill select --groups g.jsonl --stats stats.parquet --by softmax_entropy_norm_T1_with_pos
--rule drop_upper_quartile --output kept.jsonl`` writes the kept groups and ``kept.jsonl.meta.json`` (the
rule, the statistic, the thresholds and the counts). Without ``--by`` the statistic is the normalised softmax
entropy with the positive (the paper's entropy study). Rules say what they keep: ``keep_lower_quartile``,
``keep_below_median``, ``drop_upper_quartile``, ``keep_interquartile``, ..., or
``keep_quantile_band --lo 0.25 --hi 0.75``.
"""

from __future__ import annotations

import argparse
import sys

from rankdistill.commands.common import declare_outputs
from rankdistill.diagnostics.selections import SELECTIONS, default_column, get_selection, select_groups


def register(sub) -> None:
    p = sub.add_parser("select", help="keep training queries by a diagnostic's quantile band",
                       description="Filter a groups file by a per-query statistic of `rankdistill diagnose`.")
    p.add_argument("--groups", required=True, metavar="JSONL", help="groups file to filter")
    p.add_argument("--stats", required=True, metavar="PARQUET", help="output of `rankdistill diagnose`")
    p.add_argument("--by", default=None, metavar="COLUMN",
                   help="statistic to select on (default: the normalised softmax entropy with the positive, "
                        "softmax_entropy_norm_T<tau>_with_pos, of the statistics file)")
    p.add_argument("--rule", required=True, choices=["keep_quantile_band", *sorted(SELECTIONS)],
                   help="which part to keep")
    p.add_argument("--lo", type=float, default=None, help="lower quantile for keep_quantile_band")
    p.add_argument("--hi", type=float, default=None, help="upper quantile for keep_quantile_band")
    p.add_argument("--output", required=True, metavar="JSONL", help="filtered groups file")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("groups", "stats"), output="file")


def run(args: argparse.Namespace) -> int:
    band = get_selection(args.rule, args.lo, args.hi)
    column = args.by or default_column(args.stats)
    meta = select_groups(args.groups, args.stats, column, band, args.output)
    th = meta["thresholds"]
    lower = "[" if th["lower_edge_inclusive"] else "("
    sys.stdout.write(f"kept {meta['n_kept']} of {meta['n_queries']} queries ({band.name}: {column} in "
                     f"{lower}{th['lo_value']:.6g}, {th['hi_value']:.6g}]) -> {args.output}\n")
    return 0
