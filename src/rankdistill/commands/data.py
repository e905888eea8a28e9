"""``rankdistill data info D``: what a dataset holds."""

from __future__ import annotations

import argparse
import json
import sys

from rankdistill.data import load_dataset


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    info = dsub.add_parser("info", help="counts of documents, queries and qrels per split")
    info.add_argument("dataset", metavar="D", help="BEIR folder, dataset .toml manifest, or irds:<id>")
    info.add_argument("--data-dir", default=None, metavar="DIR", help="folder to resolve relative names against")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)


def dataset_info(ds) -> dict:
    """Counts for ``data info``: docs, mean doc length (words), and per split queries, judged queries, qrels."""
    splits = {}
    for split in ds.split_names():
        qrels = ds.qrels(split)
        queries = ds.queries(split)
        splits[split] = {
            "queries": len(queries),
            "judged_queries": sum(1 for q, d in qrels.items() if d),
            "qrels": sum(len(d) for d in qrels.values()),
            "relevant": sum(1 for d in qrels.values() for r in d.values() if r >= ds.rel_threshold(split)),
            "rel_threshold": ds.rel_threshold(split),
        }
    return {"name": ds.name, "docs": len(ds.corpus), "mean_doc_length": round(ds.corpus.mean_doc_length, 2),
            "splits": splits}


def run_info(args: argparse.Namespace) -> int:
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    info = dataset_info(ds)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    out = [f"dataset          {info['name']}", f"documents        {info['docs']}",
           f"mean doc length  {info['mean_doc_length']} words", ""]
    out.append(f"{'split':<10}{'queries':>9}{'judged':>9}{'qrels':>9}{'relevant':>10}{'rel>=':>7}")
    for name, s in info["splits"].items():
        out.append(f"{name:<10}{s['queries']:>9}{s['judged_queries']:>9}{s['qrels']:>9}{s['relevant']:>10}"
                   f"{s['rel_threshold']:>7}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0
