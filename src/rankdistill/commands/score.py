"""``rankdistill score``: label the groups' (query, document) pairs with a teacher, into a score store.

Incremental and resumable: pairs already in the store are not scored again, and a killed run re-run with the
same command scores only what is missing. Several ``--teacher`` models make an ensemble (the mean of their
z-normalised scores) stored as one teacher, each member's scores stored under its own id as well.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankdistill.commands.common import add_dataset_args, declare_outputs, open_dataset
from rankdistill.errors import UserInputError
from rankdistill.teachers.options import DTYPE_CHOICES, SCORE_SPACES, SIMILARITIES, TEACHER_KINDS

if TYPE_CHECKING:
    from rankdistill.teachers.engine import TeacherSpec
    from rankdistill.teachers.store import ScoreStore

logger = logging.getLogger(__name__)


def add_teacher_args(p: argparse.ArgumentParser, required: bool, batch_size: int = 64) -> None:
    """The teacher options shared by ``score`` and ``mine``."""
    p.add_argument("--teacher", nargs="+", required=required, metavar="MODEL",
                   help="cross-encoder or bi-encoder (local directory or Hugging Face name); several make an "
                        "ensemble: the mean of their z-normalised scores")
    p.add_argument("--teacher-id", default=None, metavar="ID",
                   help="id to store the scores under (default: the model name as given)")
    p.add_argument("--teacher-type", choices=TEACHER_KINDS, default="auto",
                   help="cross-encoder, bi-encoder, or auto (from the model's files; default)")
    p.add_argument("--score-space", choices=("auto", *SCORE_SPACES), default="auto",
                   help="cross-encoder score: logit (1 output), log_p_rel (log P(relevant)), log_odds; "
                        "auto = logit for 1 output, log_p_rel for 2 (default)")
    p.add_argument("--similarity", choices=SIMILARITIES, default="dot", help="bi-encoder score (default dot)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="token limit of a query-document input (default: min(512, the model's limit))")
    p.add_argument("--batch-size", type=int, default=batch_size, metavar="N",
                   help=f"pairs per forward pass (default {batch_size})")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                   help="auto = bfloat16/float16 on a GPU, float32 on a CPU (default)")
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="accept a cross-encoder whose classification head is random (benchmarks only)")
    p.add_argument("--chunk-size", type=int, default=8192, metavar="N",
                   help="pairs tokenised and length-sorted at a time (default 8192)")
    p.add_argument("--cache", default=None, metavar="STORE",
                   help="a score store shared between jobs: pairs found there are copied instead of scored, new "
                        "scores are added to it (one teacher's scores, e.g. across every strategy of a study)")
    p.add_argument("--executor", choices=("local", "processes", "ray"), default="local",
                   help="where the teacher scores: here (default), in --workers local processes, or as Ray tasks "
                        "(one chunk of --chunk-size pairs each, the teacher loaded once per worker); `mine` "
                        "without a teacher mines shards of queries there instead")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="--executor processes: processes (2)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--executor ray: the cluster (default: start or join a local instance)")
    p.add_argument("--gpus-per-task", type=float, default=None, metavar="G",
                   help="--executor ray: GPUs each task asks for (default 1 where this machine has a GPU, else 0; "
                        "0 for `mine` shards that run no model)")


def scoring_executor(args: argparse.Namespace):
    """The executor ``--executor`` names, or ``None`` to score in this process."""
    if args.executor == "local":
        return None
    if args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {args.workers}")
    from rankdistill.experiments.executors import make_executor

    gpus = args.gpus_per_task
    if gpus is None:
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
    return make_executor(args.executor, args.ray_address, gpus, 1.0, args.workers)


@contextlib.contextmanager
def scoring_stores(args: argparse.Namespace, spec: TeacherSpec, store_path: str | Path
                   ) -> Iterator[tuple[ScoreStore, ScoreStore | None, Any]]:
    """``(store, cache, executor)`` for a command that scores with ``spec``: the store at ``store_path``, the
    ``--cache`` store (``None`` without ``--cache``; refused for an ensemble, whose members' ids it would mix)
    and the ``--executor``. All are closed on the way out, and stores the command created are removed when it
    fails before they hold a score (:func:`~rankdistill.teachers.store.new_stores_removed_on_error`)."""
    from rankdistill.teachers.engine import EnsembleConfig
    from rankdistill.teachers.store import ScoreStore, new_stores_removed_on_error

    if args.cache and isinstance(spec, EnsembleConfig):  # was silently ignored
        raise UserInputError("--cache holds one teacher's scores, and several --teacher models make an ensemble",
                             fix="leave --cache out, or score with each teacher on its own with --cache")
    with new_stores_removed_on_error(store_path, args.cache), \
            contextlib.ExitStack() as stack:  # closed inside: a store is judged after it is closed
        executor = scoring_executor(args)
        if executor is not None:
            stack.callback(executor.close)
        cache = stack.enter_context(ScoreStore(args.cache)) if args.cache else None
        yield stack.enter_context(ScoreStore(store_path)), cache, executor


def teacher_spec(args: argparse.Namespace):
    """A :class:`TeacherConfig` (one ``--teacher``) or :class:`EnsembleConfig` (several) from the options."""
    from rankdistill.teachers.engine import EnsembleConfig
    from rankdistill.teachers.models import TeacherConfig

    if args.chunk_size < 1:
        raise UserInputError(f"--chunk-size must be at least 1, got {args.chunk_size}")

    def config(model: str, tid: str | None) -> TeacherConfig:
        return TeacherConfig(model=model, teacher_id=tid, kind=args.teacher_type, score_space=args.score_space,
                             similarity=args.similarity, max_length=args.max_length, batch_size=args.batch_size,
                             device=args.device, dtype=args.dtype, allow_untrained_head=args.allow_untrained_head)

    from rankdistill.models import resolve_model
    from rankdistill.teachers.models import read_model_config

    models = list(dict.fromkeys(args.teacher))
    for model in models:  # a mistyped name fails here, not after the mining that comes before its scores
        resolved = resolve_model(model)  # a local folder is checked here; a hub name by fetching its config
        if not Path(resolved).is_dir():
            read_model_config(resolved)
    if len(models) == 1:
        return config(models[0], args.teacher_id)
    return EnsembleConfig(tuple(config(m, None) for m in models), teacher_id=args.teacher_id)


def register(sub) -> None:
    p = sub.add_parser("score", help="score the groups' pairs with a teacher into a score store",
                       description="Label the groups' (query, document) pairs with a teacher into a score "
                                   "store; incremental and resumable (a re-run scores only what is missing).")
    add_dataset_args(p, split=False)
    p.add_argument("--split", default=None, metavar="S",
                   help="look query ids up in this split only (default: every split of the dataset)")
    p.add_argument("--groups", required=True, metavar="GROUPS", help="groups JSONL file (from `rankdistill mine`)")
    p.add_argument("--output", required=True, metavar="STORE", help="score store (SQLite) to create or extend")
    add_teacher_args(p, required=True)
    p.add_argument("--export-run", default=None, metavar="RUN",
                   help="also write the teacher's scores of these groups as a TREC run")
    p.add_argument("--export-json-gz", default=None, metavar="FILE",
                   help="also write them in the paper's format ({qid: {docid: score}}, gzipped JSON)")
    p.set_defaults(func=run)
    declare_outputs(p, reads=("groups", "teacher"), output="file", cache="file", export_run="file",
                    export_json_gz="file")


def run(args: argparse.Namespace) -> int:
    from rankdistill.teachers.engine import CorpusTexts, EnsembleConfig, score_ensemble, score_pairs
    from rankdistill.teachers.models import load_teacher
    from rankdistill.teachers.pairs import dataset_queries, read_group_pairs

    spec = teacher_spec(args)
    ds = open_dataset(args)
    queries = dataset_queries(ds, args.split)
    gp = read_group_pairs(args.groups, queries, ds.corpus)
    texts = CorpusTexts(queries, ds.corpus)
    with scoring_stores(args, spec, args.output) as (store, cache, executor):
        if isinstance(spec, EnsembleConfig):
            reports = score_ensemble(spec, gp, texts, store, chunk_size=args.chunk_size, executor=executor)
        else:
            teacher = load_teacher(spec)
            try:
                reports = [score_pairs(teacher, gp, texts, store, chunk_size=args.chunk_size, cache=cache,
                                       executor=executor)]
            finally:
                teacher.close()
        if args.export_run:
            store.export_run(args.export_run, spec.id, gp)
        if args.export_json_gz:
            store.export_json_gz(args.export_json_gz, spec.id, gp)
    for r in reports:
        shared = f", {r.reused} from the cache" if cache is not None else ""
        print(f"{r.teacher_id}: {r.requested} pairs, {r.cached} already stored{shared}, {r.scored} scored "
              f"({r.pairs_per_second:.0f} pairs/s) -> {args.output}")
    return 0
