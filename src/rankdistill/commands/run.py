"""``rankdistill run CONFIG.toml``: a whole factorial study, cached and resumable, with a report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("run", help="run a whole study from a TOML config (cached, resumable) and write a report",
                       description="Run a factorial study: first stage, teacher, mining per strategy, scoring, "
                                   "diagnostics, selections, training per cell, evaluation, statistics and a "
                                   "report. Every stage is an artifact under OUTPUT/artifacts; re-running does no "
                                   "work and a killed run resumes.")
    p.add_argument("config", metavar="CONFIG.toml", help="study config (see examples/quickstart.toml)")
    p.add_argument("--output", default=None, metavar="DIR", help="output folder (default: runs/<config name>)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder to resolve dataset names against (default: $RANKDISTILL_DATA)")
    p.add_argument("--executor", choices=("local", "ray"), default=None, help="override the config's executor")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--validate-only", action="store_true", help="check the config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from rankdistill.experiments.config import load_config
    from rankdistill.experiments.runner import Study

    cfg = load_config(args.config, data_dir=args.data_dir)
    if args.executor or args.ray_address:
        ex = dataclasses.replace(cfg.executor, kind=args.executor or cfg.executor.kind,
                                 address=args.ray_address or cfg.executor.address)
        cfg = dataclasses.replace(cfg, executor=ex)
    if args.validate_only:
        sys.stdout.write(f"{args.config}: valid ({len(cfg.grid.strategies)} strategies x {len(cfg.grid.losses)} "
                         f"losses x {len(cfg.grid.archs)} archs x {len(cfg.grid.group_sizes)} group sizes x "
                         f"{len(cfg.grid.selections)} selections x {len(cfg.grid.seeds)} seeds)\n")
        return 0
    output = Path(args.output) if args.output else Path("runs") / cfg.name
    report = Study(cfg, output, data_dir=args.data_dir).run()
    sys.stdout.write(f"{report}\n")
    return 0
