"""Arguments and helpers shared by several verbs."""

from __future__ import annotations

import argparse

from rankdistill.data import Dataset, load_dataset


def add_dataset_args(parser: argparse.ArgumentParser, split: bool = True, split_default: str | None = None) -> None:
    """``--dataset D`` (BEIR folder, .toml manifest or irds:<id>), ``--data-dir`` and optionally ``--split``."""
    parser.add_argument("--dataset", required=True, metavar="D",
                        help="BEIR folder, dataset .toml manifest, or irds:<ir_datasets id>")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder to resolve relative dataset names against (default: $RANKDISTILL_DATA)")
    if split:
        parser.add_argument("--split", required=split_default is None, default=split_default, metavar="S",
                            help="split name (e.g. test, dl19)" + (f"; default {split_default}" if split_default
                                                                  else ""))


def open_dataset(args: argparse.Namespace) -> Dataset:
    """Load ``args.dataset``; validate ``args.split`` when the verb has one (unknown splits list the known)."""
    ds = load_dataset(args.dataset, data_dir=getattr(args, "data_dir", None))  # $RANKDISTILL_DATA otherwise
    split = getattr(args, "split", None)
    if split is not None:
        ds.qrels(split)  # raises a UserInputError listing the known splits
    return ds
