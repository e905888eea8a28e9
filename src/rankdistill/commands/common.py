"""Arguments and helpers shared by several verbs."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from rankdistill.data import Dataset, load_dataset
from rankdistill.errors import UserInputError


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


def declare_outputs(parser: argparse.ArgumentParser, **kinds: str) -> None:
    """Name the verb's output arguments, which :func:`check_outputs` checks before the verb runs: ``"file"``,
    ``"dir"`` (a folder the verb makes its own, replacing what it holds) or ``"folder"`` (one it adds files to,
    such as plots, which may be a folder the verb reads from)."""
    parser.set_defaults(_outputs=kinds)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _input_paths(args: argparse.Namespace, outputs: dict[str, str]) -> list[tuple[str, Path]]:
    """Every other argument naming an existing file or folder, and the files of ``--dataset``: what a verb reads."""
    found: list[tuple[str, Path]] = []
    for dest, value in vars(args).items():
        if dest in outputs or dest.startswith("_") or dest in ("func", "command"):
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, str) and v and os.path.exists(v):
                found.append((_flag(dest) if dest != "config" else "the config", Path(v)))
    spec = getattr(args, "dataset", None)
    if isinstance(spec, str):
        from rankdistill.data.dataset import resolve_spec

        data_dir = getattr(args, "data_dir", None)
        with contextlib.suppress(UserInputError):  # the verb reports a bad dataset itself
            if isinstance(resolve_spec(spec, data_dir), Path):
                found += [("--dataset", f) for f in load_dataset(spec, data_dir=data_dir).files()]
    return found


def check_writable(path: Path, flag: str, kind: str) -> None:
    """Refuse an output that cannot be created as a ``kind`` (see :func:`declare_outputs`) at ``path``."""
    if kind == "file" and path.is_dir():
        raise UserInputError(f"{flag} is a directory", path=path, fix="give a file name")
    if kind != "file" and path.exists() and not path.is_dir():
        raise UserInputError(f"{flag} is a file, not a folder", path=path, fix="give a new or existing folder")
    if path.exists():
        parent = path.parent if kind == "file" else path
    else:  # the folders up to it are made as needed
        parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserInputError(f"{flag} cannot be created: {parent} is not a directory", path=path,
                             fix="give a path inside a directory")
    try:  # permissions alone do not tell (root, read-only or special file systems): try to create a file
        fd, probe = tempfile.mkstemp(prefix=".rankdistill-probe-", dir=parent)
    except OSError as e:
        raise UserInputError(f"{flag} cannot be written: {parent} does not take new files ({e.strerror})",
                             path=path, fix="give a path in a writable folder") from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(args: argparse.Namespace) -> None:
    """Before a verb runs: each output it names (:func:`declare_outputs`) can be written, and none is one of its
    inputs or another of its outputs (writing it would replace what the verb reads)."""
    kinds: dict[str, str] = getattr(args, "_outputs", None) or {}
    outputs = [(dest, Path(v), kind) for dest, kind in kinds.items() if isinstance(v := getattr(args, dest, None), str)]
    if not outputs:
        return
    inputs = _input_paths(args, kinds)
    seen: list[tuple[str, Path]] = []
    for dest, path, kind in outputs:
        flag = _flag(dest)
        check_writable(path, flag, kind)
        if path.exists() and kind != "folder":
            for other, p in inputs + seen:
                if p.exists() and os.path.samefile(path, p):
                    raise UserInputError(f"{flag} is also {other}: writing it would replace what is read there",
                                         path=path, fix=f"give {flag} another path")
        else:
            for other, p in seen:
                if p.resolve() == path.resolve():
                    raise UserInputError(f"{flag} is also {other}", path=path, fix=f"give {flag} another path")
        seen.append((flag, path))
