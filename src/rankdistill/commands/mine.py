"""``rankdistill mine``: build training groups (positives + a pool of negatives) with a sampling strategy."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankdistill import __version__
from rankdistill.commands.common import add_dataset_args, check_writable, declare_outputs, open_dataset
from rankdistill.commands.score import add_teacher_args, scoring_executor, scoring_stores, teacher_spec
from rankdistill.errors import UserInputError, unused_flags
from rankdistill.io import atomic_write

logger = logging.getLogger(__name__)


def _csv(values: list[str] | None) -> tuple[str, ...]:
    """``a.trec,b.trec c.trec`` -> ``("a.trec", "b.trec", "c.trec")``."""
    return tuple(v for item in values or [] for v in item.split(",") if v)


def sidecar_path(output: str | Path) -> Path:
    """The settings/counts JSON written beside a groups file: ``groups.jsonl`` -> ``groups.jsonl.meta.json``."""
    p = Path(output)
    return p.with_name(p.name + ".meta.json")


def default_store_path(output: str | Path) -> Path:
    """The score store beside a groups file: ``groups.jsonl`` -> ``groups.scores.db``."""
    p = Path(output)
    stem = p.name.removesuffix(".gz").removesuffix(".jsonl")
    return p.with_name(stem + ".scores.db")


def register(sub) -> None:
    import rankdistill.mining.strategies  # noqa: F401  (fills the registry)
    from rankdistill.mining.base import STRATEGIES

    p = sub.add_parser("mine", help="mine training groups (positives + negative pool) with a sampling strategy",
                       description="Mine training groups: judged positives and a pool of negatives per query, from "
                                   "a sampling strategy; writes the groups JSONL and a sidecar JSON (settings, "
                                   "counts, time).")
    add_dataset_args(p, split_default="train")
    p.add_argument("--strategy", required=True, choices=sorted(STRATEGIES), help="sampling strategy")
    p.add_argument("--group-size", type=int, required=True, metavar="G",
                   help="documents per training group (1 positive + G-1 negatives)")
    p.add_argument("--pool", type=int, default=None, metavar="P",
                   help="negatives kept per query (default 2 x group size)")
    p.add_argument("--depth", type=int, default=200, metavar="N", help="first-stage depth (default 200)")
    p.add_argument("--min-rank", type=int, default=1, metavar="R",
                   help="first rank of the window (default 1); a window and --sample top need a ranking: not random, "
                        "nor the ensemble's filter fusion")
    p.add_argument("--max-rank", type=int, default=None, metavar="R",
                   help="last rank of the window (default: --depth; teacher: 100, its top-m)")
    p.add_argument("--sample", choices=("random", "top"), default="random",
                   help="take the pool uniformly from the window (random, default) or from its top")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--on-short", choices=("topup", "skip"), default="topup",
                   help="a query with fewer candidates than the pool (ensemble's filter: than a group needs, "
                        "as the paper pads its union): top up with random documents (default) or skip it")
    p.add_argument("--fn-margin", type=float, default=None, metavar="M",
                   help="false-negative guard: drop candidates the teacher scores above (lowest positive - M); "
                        "default off")
    p.add_argument("--min-relevance", type=int, default=None, metavar="R",
                   help="qrels level of a positive (default: the split's rel_threshold)")
    p.add_argument("--max-queries", type=int, default=None, metavar="N", help="mine only the first N queries")
    p.add_argument("--candidates", default=None, metavar="RUN", help="TREC run for --strategy run")
    p.add_argument("--systems", nargs="+", default=None, metavar="RUN",
                   help="TREC runs for --strategy ensemble (comma- or space-separated)")
    p.add_argument("--retrievers", nargs="+", default=None, metavar="NAME",
                   help="named first stages for --strategy ensemble: bm25, dense (default both, without --systems)")
    # the ensemble's settings default to None so that one given to a rule that ignores it can be refused
    p.add_argument("--fusion", choices=("filter", "rrf"), default=None,
                   help="ensemble: per-system teacher filter + union (default) or reciprocal-rank fusion")
    p.add_argument("--ensemble-n", type=int, default=None, metavar="N",
                   help="ensemble --fusion filter: negatives per system (default 10)")
    p.add_argument("--ensemble-margin", type=float, default=None, metavar="M",
                   help="ensemble --fusion filter: keep negatives scoring <= lowest positive - M (default 0.5)")
    p.add_argument("--rrf-k", type=int, default=None, metavar="K", help="ensemble --fusion rrf: constant k (60)")
    p.add_argument("--encoder", default=None, metavar="MODEL",
                   help="bi-encoder for dense retrieval (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--encoder-similarity", choices=("dot", "cosine"), default="dot",
                   help="dense retrieval similarity (default dot)")
    p.add_argument("--encoder-batch-size", type=int, default=64, metavar="N", help="encoding batch size (64)")
    p.add_argument("--encoder-max-length", type=int, default=None, metavar="N",
                   help="encoder token limit (default: the model's own)")
    p.add_argument("--embedding-cache", default=None, metavar="DIR",
                   help="embedding cache folder (default $RANKDISTILL_CACHE/embeddings)")
    add_teacher_args(p, required=False)
    p.add_argument("--scores", default=None, metavar="STORE",
                   help="score store for the teacher's scores (default: beside the output, groups.jsonl -> "
                        "groups.scores.db; pass it to `rankdistill score --output` to reuse them)")
    p.add_argument("--output", required=True, metavar="GROUPS", help="groups JSONL file to write")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("candidates", "systems", "teacher", "encoder"), output="file", scores="file",
                    cache="file", embedding_cache="folder")


def mining_config(args: argparse.Namespace):
    from rankdistill.mining.base import MiningConfig

    return MiningConfig(
        strategy=args.strategy, group_size=args.group_size, pool_size=args.pool, depth=args.depth,
        min_rank=args.min_rank, max_rank=args.max_rank, sample=args.sample, seed=args.seed, on_short=args.on_short,
        fn_margin=args.fn_margin, min_relevance=args.min_relevance, max_queries=args.max_queries,
        candidates=args.candidates, systems=_csv(args.systems), retrievers=_csv(args.retrievers),
        encoder=args.encoder, encoder_batch_size=args.encoder_batch_size,
        encoder_max_length=args.encoder_max_length, similarity=args.encoder_similarity,
        embedding_cache=args.embedding_cache, **_ensemble_settings(args))


ENSEMBLE_FLAGS = {"fusion": ("--fusion", None), "ensemble_n": ("--ensemble-n", "filter"),
                  "ensemble_margin": ("--ensemble-margin", "filter"), "rrf_k": ("--rrf-k", "rrf")}
"""The ensemble's settings: field -> (flag, the fusion that reads it; None: both)."""


def _ensemble_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ensemble settings given on the command line (the others keep :class:`MiningConfig`'s defaults). One
    that the chosen strategy or fusion would ignore is refused: a user who sets ``--rrf-k`` without ``--fusion
    rrf`` expects it to change the groups."""
    given = {field: getattr(args, field) for field in ENSEMBLE_FLAGS if getattr(args, field) is not None}
    fusion = given.get("fusion", "filter")
    ignored = [ENSEMBLE_FLAGS[f][0] for f in given
               if args.strategy != "ensemble" or ENSEMBLE_FLAGS[f][1] not in (None, fusion)]
    if ignored:
        where = (f"--strategy ensemble, not {args.strategy}" if args.strategy != "ensemble"
                 else f"the ensemble's other fusion, not --fusion {fusion}")
        raise unused_flags(ignored, f"only used by {where}")
    return given


@contextlib.contextmanager
def _executor_only(args: argparse.Namespace) -> Iterator[tuple[None, None, Any]]:
    """``(None, None, executor)`` for mining without a teacher: the ``--executor`` mines shards of queries.
    Only a dense first stage runs a model, so the other strategies' tasks ask for no GPU by default (one each
    would queue them behind the GPUs)."""
    from rankdistill.mining.base import MODEL_STRATEGIES

    if args.gpus_per_task is None and args.strategy not in MODEL_STRATEGIES:
        args = argparse.Namespace(**{**vars(args), "gpus_per_task": 0.0})
    executor = scoring_executor(args)
    try:
        yield None, None, executor
    finally:
        if executor is not None:
            executor.close()


def run(args: argparse.Namespace) -> int:
    from rankdistill.data.groups import write_groups
    from rankdistill.mining import Miner, MiningContext

    config = mining_config(args)
    config.validate()
    check_writable(sidecar_path(args.output), "--output's sidecar", "file", probe=False)  # written beside it
    if config.strategy == "run" and not config.candidates:
        raise UserInputError("--strategy run needs --candidates FILE (a TREC run)")
    if not args.teacher:  # the teacher's options would be silently ignored
        given = [flag for flag, value in (("--teacher-id", args.teacher_id), ("--max-length", args.max_length),
                                          ("--cache", args.cache), ("--scores", args.scores)) if value is not None]
        if given:
            raise unused_flags(given, "for the teacher's scores, and no --teacher is given", "give --teacher MODEL")
    spec = teacher_spec(args) if args.teacher else None
    ds = open_dataset(args)
    teacher = None
    store_path = Path(args.scores) if args.scores else default_store_path(args.output)
    work: dict[str, int] = {}
    with scoring_stores(args, spec, store_path) if spec is not None else _executor_only(args) \
            as (store, cache, executor):
        try:
            if spec is not None:
                from rankdistill.teachers.engine import CorpusTexts, TeacherScores
                from rankdistill.teachers.pairs import dataset_queries

                teacher = TeacherScores(spec, store, CorpusTexts(dataset_queries(ds, args.split), ds.corpus),
                                        chunk_size=args.chunk_size, cache=cache, executor=executor)
            miner = Miner(MiningContext(config, ds, args.split, teacher), executor=executor)
            if teacher is not None and not miner.uses_teacher:
                raise UserInputError(f"--teacher is not used by --strategy {config.strategy} without --fn-margin",
                                     fix="leave out --teacher, or add --fn-margin to guard against false "
                                         "negatives")
            result = miner.run()
            teacher_info = teacher.info() if teacher is not None else None
            if teacher is not None:
                work = {k: sum(getattr(r, k) for r in teacher.reports) for k in ("scored", "reused", "cached")}
        finally:
            if teacher is not None:
                teacher.close()
    write_groups(result.groups, args.output)
    meta = {
        "command": "mine", "rankdistill": __version__, "output": str(args.output),
        "dataset": {"spec": str(args.dataset), "name": ds.name, "split": args.split},
        "settings": config.to_dict(), "strategy_settings": result.settings,
        "teacher": None if spec is None else {"id": spec.id, "store": str(store_path), "info": teacher_info,
                                              "pairs": work},
        "counts": result.counts, "seconds": round(result.seconds, 3),
        "executor": {"name": args.executor, "mining_shards": result.shards},
    }
    with atomic_write(sidecar_path(args.output)) as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
        fh.write("\n")
    c = result.counts
    print(f"mined {c['groups']} groups ({config.strategy}, group size {config.group_size}, pool {config.pool}; "
          f"{c['queries_short']} short, {c['queries_skipped']} skipped, {c['false_negatives_dropped']} false "
          f"negatives dropped) -> {args.output}")
    return 0
