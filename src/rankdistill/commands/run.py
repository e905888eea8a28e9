"""``rankdistill run CONFIG.toml``: a whole factorial study, cached and resumable, with a report."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
from pathlib import Path

from rankdistill.commands.common import check_writable, declare_outputs

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
    p.add_argument("--executor", choices=("local", "processes", "ray"), default=None,
                   help="override the config's executor")
    p.add_argument("--workers", type=int, default=None,
                   help="cells at once with --executor processes (default: the config's executor.workers)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (TOML syntax; repeatable), e.g. --set student.budget_docs=2048 "
                        "--set 'grid.seeds=[0]' --set test.scifact.depth=20")
    p.add_argument("--validate-only", action="store_true", help="check the config and exit")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("config",), output="dir")


def _terminate(signum, frame) -> None:
    """Unwind on the first SIGTERM and ignore the ones after it: GNU `timeout` signals the command and then its
    whole process group, so the run gets two at once, and a second SystemExit raised inside the first one's
    unwinding broke it (seen on the GPU: ``RuntimeError: release unlocked lock`` from a condition variable the
    first had left half-released). ``run`` puts the previous handler back when it returns."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from rankdistill.errors import UserInputError
    from rankdistill.experiments.artifacts import ARTIFACTS, finished_artifacts
    from rankdistill.experiments.config import load_config
    from rankdistill.experiments.runner import Study

    cfg = load_config(args.config, data_dir=args.data_dir, overrides=args.overrides)
    if args.workers is not None and args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {args.workers}")
    if args.executor or args.ray_address or args.workers:
        ex = dataclasses.replace(cfg.executor, kind=args.executor or cfg.executor.kind,
                                 address=args.ray_address or cfg.executor.address,
                                 workers=args.workers or cfg.executor.workers)
        cfg = dataclasses.replace(cfg, executor=ex)
    output = Path(args.output) if args.output else Path("runs") / cfg.name
    if args.validate_only:
        from rankdistill.experiments.runner import entropy_cells, grid_cells, study_cells

        n, grid = len(study_cells(cfg)), grid_cells(cfg)
        entropy = len(set(entropy_cells(cfg)) - set(grid))
        budget = n - len(grid) - entropy
        sys.stdout.write(f"{args.config}: valid; {n} cells ({len(cfg.grid.strategies)} strategies x "
                         f"{len(cfg.grid.losses)} losses x {len(cfg.grid.archs)} archs x {len(cfg.grid.group_sizes)} "
                         f"group sizes x {len(cfg.grid.selections)} selections x {len(cfg.grid.seeds)} seeds"
                         + (f", + {entropy} of the entropy study" if entropy else "")
                         + (f", + {budget} of the budget study" if budget else "") + ")\n")
        return 0
    if args.output is None:  # a given --output was checked with the other verbs' outputs
        check_writable(output, "the default --output (runs/<config name>)", "dir")
    # a SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so that worker processes are stopped too
    previous = signal.signal(signal.SIGTERM, _terminate)
    fresh = not output.exists()
    try:
        report = Study(cfg, output, data_dir=args.data_dir).run()
    except UserInputError:
        # bad input found before any stage finished leaves nothing behind; finished artifacts are kept for
        # the run that resumes them
        if fresh and output.is_dir() and not any(finished_artifacts(output / ARTIFACTS)):
            shutil.rmtree(output, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(f"{report}\n")
    return 0
