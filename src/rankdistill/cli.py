"""The ``rankdistill`` command line: one sub-command per pipeline stage.

Each verb lives in ``rankdistill/commands/<verb>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable ``(args) -> int``. Bad input raises
:class:`~rankdistill.errors.UserInputError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from rankdistill import __version__
from rankdistill.errors import UserInputError

logger = logging.getLogger("rankdistill")

COMMANDS: tuple[str, ...] = (
    "retrieve",
    "evaluate",
    "mine",
    "score",
    "convert",
    "train",
    "rerank",
    "diagnose",
    "select",
    "compare",
    "run",
    "data",
)
"""Modules under ``rankdistill.commands`` that register a verb, in the order ``--help`` lists them."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line message (argparse's own default is already 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if _depth > 0:  # a verb composed by another (``run``): its caller reports the error, in one line
            raise UserInputError(f"{message} (see `{self.prog} --help`)")
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb, or of ``command`` alone: each verb module imports what its options need
    (``train`` the losses and torch, ``compare`` scipy and statsmodels), so a command builds only its own
    and starts in well under a second instead of importing them all (about 5 s on a 2-core machine)."""
    parser = _ArgumentParser(prog="rankdistill", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"rankdistill {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True
    for name in COMMANDS if command is None else (command,):
        importlib.import_module(f"rankdistill.commands.{name}").register(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` names, or ``None`` where it names none (top-level ``--help``, a typo: the full parser
    then lists the verbs). The top-level options take no value, so the first other word is the verb."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
        if word.startswith("--") and len(word) > 2 and ("--help".startswith(word) or "--version".startswith(word)):
            return None  # argparse takes an abbreviation of a long option
        if not word.startswith("--") and "h" in word:
            return None  # -h, or a cluster with it (-vh)
    return None


class _BelowRootLevel(logging.Filter):
    """Drops records under the root logger's level, for a library logger that sets its own level and does not
    propagate (ir_datasets: its ``[INFO]`` lines came through ``-q`` and inside a study's stages)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.getLogger().level


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "transformers", "sentence_transformers", "bm25s",
                  "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    follow_root_level()


def follow_root_level(names: Sequence[str] = ("ir_datasets",)) -> None:
    """Make the loggers ``names``, which set their own level and handler and do not propagate, drop what the
    root logger's level drops (once per logger; a process pool's workers call it too)."""
    for name in names:
        lib = logging.getLogger(name)  # its handler and level are its own; the filter outlives them
        if not any(isinstance(f, _BelowRootLevel) for f in lib.filters):
            lib.addFilter(_BelowRootLevel())


_depth = 0
"""How many ``main`` calls are active: verbs composed by ``run`` keep the outer call's logging settings."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rankdistill`` console script; returns the exit code."""
    global _depth
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # paths and numbers too, as call_verb
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if _depth == 0:
        setup_logging(args.verbose, args.quiet)
    _depth += 1
    try:
        from rankdistill.commands.common import check_outputs

        check_outputs(args)
        return int(args.func(args) or 0)
    except UserInputError as e:
        if _depth > 1:  # composed by another verb: it reports the error as its own, in one line
            raise
        print(f"rankdistill {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _depth > 1:
            raise
        print(f"rankdistill {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _depth -= 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
