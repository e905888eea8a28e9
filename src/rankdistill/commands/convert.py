"""``rankdistill convert``: import and export the paper's training format (triples + teacher ``.json.gz``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from rankdistill.commands.common import declare_outputs
from rankdistill.errors import UserInputError

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("convert", help="import/export the paper's triples + teacher .json.gz format",
                       description="Convert between rankdistill groups + score store and the paper's format: "
                                   "triples JSONL ({query_id, doc_id_a, doc_id_b: [...]}) and a teacher file "
                                   "({qid: {docid: score}}, gzipped JSON).")
    verbs = p.add_subparsers(dest="direction", metavar="DIRECTION")
    verbs.required = True

    to = verbs.add_parser("to-paper", help="groups (+ scores) -> triples (+ teacher .json.gz)")
    to.add_argument("--groups", required=True, metavar="GROUPS", help="groups JSONL file")
    to.add_argument("--output", required=True, metavar="TRIPLES", help="triples JSONL to write")
    to.add_argument("--all-positives", action="store_true", help="one line per positive (default: the first)")
    to.add_argument("--scores", default=None, metavar="STORE", help="score store to export the teacher from")
    to.add_argument("--teacher-id", default=None, metavar="ID", help="teacher in the store (default: its only one)")
    to.add_argument("--teacher-output", default=None, metavar="FILE",
                    help="teacher file to write ({qid: {docid: score}}, .json.gz), the groups' pairs only")
    to.set_defaults(func=run_to_paper)
    declare_outputs(to, reads=("groups", "scores"), output="file", teacher_output="file")

    fr = verbs.add_parser("from-paper", help="triples (+ teacher .json.gz) -> groups (+ score store)")
    fr.add_argument("--triples", required=True, metavar="TRIPLES", help="triples JSONL (gzipped or not)")
    fr.add_argument("--output", required=True, metavar="GROUPS", help="groups JSONL to write")
    fr.add_argument("--strategy", default="paper", help="strategy name recorded in the groups (default paper)")
    fr.add_argument("--dataset", default=None, metavar="D",
                    help="check query and doc ids against this dataset, and leave documents its qrels judge "
                         "relevant out of the negatives")
    fr.add_argument("--data-dir", default=None, metavar="DIR", help="folder to resolve relative dataset names")
    fr.add_argument("--split", default=None, metavar="S",
                    help="with --dataset: the split whose queries and qrels the triples belong to (default: every "
                         "split)")
    fr.add_argument("--teacher-file", default=None, metavar="FILE", help="teacher file to import into --scores")
    fr.add_argument("--scores", default=None, metavar="STORE", help="score store to import the teacher file into")
    fr.add_argument("--teacher-id", default=None, metavar="ID",
                    help="id of the imported teacher (default: the teacher file's name without .json.gz)")
    fr.add_argument("--score-space", default="unknown",
                    help="what the imported scores are (e.g. log_p_rel, logit; default unknown); recorded with them")
    fr.set_defaults(func=run_from_paper)
    declare_outputs(fr, reads=("triples", "teacher_file"), output="file", scores="file")

    ex = verbs.add_parser("export-scores", help="a score store's teacher -> TREC run and/or teacher .json.gz",
                          description="Export every score of one teacher of a store (one written by `score` or "
                                      "`mine`, or imported by `from-paper`) as a TREC run, ranked per query by "
                                      "the teacher's score, and/or as the paper's teacher file.")
    ex.add_argument("--scores", required=True, metavar="STORE", help="the score store")
    ex.add_argument("--teacher-id", default=None, metavar="ID", help="teacher in the store (default: its only one)")
    ex.add_argument("--run", default=None, metavar="RUN", help="TREC run to write")
    ex.add_argument("--teacher-output", default=None, metavar="FILE",
                    help="teacher file to write ({qid: {docid: score}}, gzipped JSON)")
    ex.set_defaults(func=run_export_scores)
    declare_outputs(ex, reads=("scores",), run="file", teacher_output="file")


def run_to_paper(args: argparse.Namespace) -> int:
    """Stream the groups file: once into the triples, and once more (only with ``--teacher-output``) into the
    store's export, so that neither holds the groups (MS MARCO's 500k queries of 100 documents) in memory."""
    from rankdistill.data.groups import iter_groups
    from rankdistill.io import require_file
    from rankdistill.mining.paper import write_paper_triples
    from rankdistill.teachers.store import ScoreStore

    if args.teacher_output and not args.scores:
        raise UserInputError("--teacher-output needs --scores STORE")
    path = require_file(args.groups, "groups file")
    groups = distinct = 0

    def counted():
        nonlocal groups, distinct
        for _, g in iter_groups(path, unique=True):
            groups += 1
            distinct += len({*g.positive_ids, *g.negative_ids})
            yield g
        if not groups:  # raised inside the write: the triples file is not left behind
            raise UserInputError("the groups file holds no groups", path=path)

    with contextlib.ExitStack() as stack:  # the store and teacher are checked before anything is written
        store = tid = None
        if args.teacher_output:
            store = stack.enter_context(ScoreStore(require_file(args.scores, "score store"), readonly=True))
            tid = store.resolve_teacher(args.teacher_id)
        lines = write_paper_triples(counted(), args.output, all_positives=args.all_positives)
        print(f"wrote {lines} triples for {groups} groups -> {args.output}")
        if store is not None and tid is not None:
            pairs = ((g.query_id, d) for _, g in iter_groups(path) for d in (*g.positive_ids, *g.negative_ids))
            have = store.export_json_gz(args.teacher_output, tid, pairs)
            if have < distinct:
                logger.warning("%d of the groups' %d pairs have no score from teacher %s; they are not in %s",
                               distinct - have, distinct, tid, args.teacher_output)
            print(f"wrote {have} scores of teacher {tid} -> {args.teacher_output}")
    return 0


def run_export_scores(args: argparse.Namespace) -> int:
    from rankdistill.io import require_file
    from rankdistill.teachers.store import ScoreStore

    if not args.run and not args.teacher_output:
        raise UserInputError("nothing to write", fix="give --run RUN and/or --teacher-output FILE")
    with ScoreStore(require_file(args.scores, "score store"), readonly=True) as store:
        tid = store.resolve_teacher(args.teacher_id)
        if args.run:
            store.export_run(args.run, tid)
            print(f"wrote the scores of teacher {tid} as a TREC run -> {args.run}")
        if args.teacher_output:
            n = store.export_json_gz(args.teacher_output, tid)
            print(f"wrote {n} scores of teacher {tid} -> {args.teacher_output}")
    return 0


def run_from_paper(args: argparse.Namespace) -> int:
    from rankdistill.data.groups import write_groups
    from rankdistill.io import require_file
    from rankdistill.mining.paper import read_paper_triples
    from rankdistill.teachers.store import ScoreStore, new_stores_removed_on_error

    if args.teacher_file and not args.scores:
        raise UserInputError("--teacher-file needs --scores STORE to import it into")
    queries = corpus = judged = None
    if args.dataset:
        from rankdistill.commands.common import open_dataset
        from rankdistill.teachers.pairs import dataset_queries

        ds = open_dataset(args)
        queries, corpus, judged = dataset_queries(ds, args.split), ds.corpus, ds.judged_relevant(args.split)
    elif args.split:
        raise UserInputError("--split names a split of --dataset", fix="give --dataset too, or leave out --split")
    groups = read_paper_triples(args.triples, args.strategy, queries, corpus, judged)
    if args.teacher_file:  # imported first: a bad teacher file leaves neither a groups file nor a new store
        name = Path(require_file(args.teacher_file, "teacher file")).name
        tid = args.teacher_id or name.removesuffix(".gz").removesuffix(".json")
        info = {"kind": "imported", "format": "paper-json-gz", "source": str(args.teacher_file),
                "score_space": args.score_space, "teacher_id": tid}
        with new_stores_removed_on_error(args.scores), ScoreStore(args.scores) as store:
            if store.has_teacher(tid) and store.teacher_info(tid).get("kind") != "imported":
                raise UserInputError(f"teacher id {tid!r} in {args.scores} holds scores of another teacher",
                                     fix="choose another id with --teacher-id")
            new = store.import_json_gz(args.teacher_file, tid, info=info)
            total = store.count(tid)
        print(f"imported {new} new scores of teacher {tid} ({total} in all) -> {args.scores}")
    n = write_groups(groups, args.output)
    print(f"wrote {n} groups -> {args.output}")
    return 0
