"""``rankdistill diagnose``: per-query teacher entropy, spread, kappa and locality of a groups file.

Writes one parquet row per query (columns named with their variant, e.g. ``softmax_entropy_nats_T1_with_pos``,
``diameter_q95_cosine``) and a sidecar ``<output>.meta.json`` with the settings, dataset-level summary
quantiles and the skipped groups with their reasons. ``--plot-dir`` draws the entropy histogram and the
diameter box plot of this strategy, next to those of other diagnose outputs given with ``--plot-with``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rankdistill.commands.common import add_dataset_args, declare_outputs
from rankdistill.diagnostics.job import DiagnoseConfig, run_diagnose
from rankdistill.diagnostics.locality import METRICS
from rankdistill.errors import UserInputError
from rankdistill.models import DEFAULT_ENCODER

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("diagnose", help="teacher entropy, kappa and locality per training query",
                       description="Per-query diagnostics of training groups scored by a teacher: softmax and "
                                   "pairwise entropy (with and without the positive), score spread, the positive's "
                                   "rank, kappa, and the robust diameter and mean distances in embedding space.")
    add_dataset_args(p, split=False)
    p.add_argument("--split", default=None, metavar="S",
                   help="split whose queries the groups use (default: look the query ids up in every split)")
    p.add_argument("--groups", required=True, metavar="JSONL", help="groups file (from `rankdistill mine`)")
    p.add_argument("--scores", required=True, metavar="STORE", help="score store (from `rankdistill score`)")
    p.add_argument("--teacher-id", default=None, metavar="ID", help="teacher in the store (default: its only one)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, metavar="MODEL",
                   help=f"encoder for the locality statistics (default {DEFAULT_ENCODER}, bundled)")
    p.add_argument("--output", required=True, metavar="PARQUET", help="per-query statistics (parquet)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature tau (default 1)")
    p.add_argument("--alpha", type=float, default=0.95, help="quantile of the robust diameter (default 0.95)")
    p.add_argument("--metric", choices=METRICS, default="cosine", help="embedding distance (default cosine)")
    p.add_argument("--group-size", type=int, default=None, metavar="G",
                   help="diagnose the positive(s) and the first G-1 negatives of each pool (default: whole pool)")
    p.add_argument("--no-locality", action="store_true", help="teacher statistics only (no encoder, no texts)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size (default 64)")
    p.add_argument("--max-length", type=int, default=None, help="encoder token limit (default: the model's)")
    p.add_argument("--normalize", action="store_true",
                   help="L2-normalise embeddings before distances (matters for --metric l2)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="embedding cache (default: the dense-mining cache, $RANKDISTILL_CACHE/embeddings)")
    p.add_argument("--plot-dir", default=None, metavar="DIR",
                   help="write entropy_hist and diameter_box figures (PNG+SVG)")
    p.add_argument("--plot-with", nargs="+", default=[], metavar="NAME=PARQUET",
                   help="other strategies' diagnose outputs to draw beside this one")
    p.add_argument("--name", default=None, help="this strategy's name in plots (default: the groups' strategy)")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("groups", "scores", "encoder"), output="file", plot_dir="folder", cache_dir="folder")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    others = _parse_plot_with(args.plot_with)
    if others and not args.plot_dir:
        raise UserInputError("--plot-with needs --plot-dir", fix="add --plot-dir DIR")
    config = DiagnoseConfig(temperature=args.temperature, alpha=args.alpha, metric=args.metric,
                            encoder=args.encoder, locality=not args.no_locality, group_size=args.group_size,
                            teacher=args.teacher_id, batch_size=args.batch_size, max_length=args.max_length,
                            normalize=args.normalize, cache_dir=args.cache_dir)
    result = run_diagnose(args.dataset, args.groups, args.scores, args.output, config, split=args.split,
                          data_dir=args.data_dir, progress=not args.quiet)
    meta = result.meta
    if args.plot_dir:
        _plots(args, config, result.frame, others, meta.get("encoder"))
    sys.stdout.write(f"diagnosed {meta['n_diagnosed']} of {meta['n_groups']} groups -> {args.output}\n")
    for reason, n in sorted(meta["skipped"].items()):
        sys.stdout.write(f"skipped {n}: {reason}\n")
    t = config.t_tag
    for col in (f"softmax_entropy_norm_{t}_with_pos", f"kappa_{t}", f"diameter_{config.alpha_tag}_{config.metric}"):
        s = meta["summary"].get(col)
        if s and "q0.5" in s:
            sys.stdout.write(f"{col}: median {s['q0.5']:.4f} (q0.05 {s['q0.05']:.4f}, q0.95 {s['q0.95']:.4f})\n")
    return 0


def _parse_plot_with(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--plot-with {item!r} is not NAME=PARQUET",
                                 fix="e.g. --plot-with random=random.parquet")
        if not Path(path).is_file():
            raise UserInputError("diagnose output not found", path=path, fix="run `rankdistill diagnose` for it first")
        out[name] = Path(path)
    return out


def _plots(args: argparse.Namespace, config: DiagnoseConfig, frame, others: dict[str, Path],
           encoder: str | None) -> None:
    import pandas as pd

    from rankdistill.data.groups import iter_groups
    from rankdistill.reports.plots import plot_diameter_per_strategy, plot_entropy_histograms

    name = args.name
    if name is None:
        name = next((g.strategy for _, g in iter_groups(args.groups)), "this")
    frames = {name: frame}
    for other, path in others.items():
        frames[other] = pd.read_parquet(path)
    col = f"softmax_entropy_nats_{config.t_tag}_with_pos"
    missing = [n for n, f in frames.items() if col not in f.columns]
    if missing:
        raise UserInputError(f"no column {col} in the diagnose output of {', '.join(missing)}",
                             fix="diagnose every strategy with the same --temperature")
    out = Path(args.plot_dir)
    plot_entropy_histograms({n: f[col].to_numpy(float) for n, f in frames.items()}, out / "entropy_hist",
                            xlabel=f"teacher softmax entropy (nats, tau={config.temperature:g}, with positive)")
    if config.locality:
        dcol = f"diameter_{config.alpha_tag}_{config.metric}"
        have = {n: f[dcol].to_numpy(float) for n, f in frames.items() if dcol in f.columns}
        plot_diameter_per_strategy(have, out / "diameter_box",
                                   ylabel=f"robust diameter ({config.alpha_tag}, {config.metric}, {encoder})")
