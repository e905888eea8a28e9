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


def declare_outputs(parser: argparse.ArgumentParser, reads: tuple[str, ...] = (), **kinds: str) -> None:
    """Name the verb's path arguments, which :func:`check_outputs` checks before the verb runs: ``reads``, the
    arguments naming files or folders it reads (``--dataset`` is always one, with its files), and its outputs
    by kind: ``"file"``, ``"dir"`` (a folder the verb makes its own, replacing what it holds) or ``"folder"``
    (one it adds files to, such as plots or an embedding cache, which may be a folder the verb reads from)."""
    dests = {a.dest for a in parser._actions}
    unknown = sorted(set(reads) - dests | set(kinds) - dests)
    if unknown:
        raise ValueError(f"{parser.prog} has no argument(s) {', '.join(unknown)}")
    parser.set_defaults(_outputs=kinds, _reads=tuple(reads))


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-") if dest != "config" else "the config"


def _input_paths(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """What a verb reads: the existing paths its ``reads`` arguments name, ``--dataset``'s folder and files."""
    found: list[tuple[str, Path]] = []
    for dest in getattr(args, "_reads", ()):
        value = getattr(args, dest, None)
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, str | os.PathLike) and str(v) and os.path.exists(v):
                found.append((_flag(dest), Path(v)))
    spec = getattr(args, "dataset", None)
    if isinstance(spec, str):
        from rankdistill.data.dataset import resolve_spec

        data_dir = getattr(args, "data_dir", None)
        with contextlib.suppress(UserInputError):  # the verb reports a bad dataset itself
            where = resolve_spec(spec, data_dir)
            if isinstance(where, Path):
                found.append(("--dataset", where))
                found += [("--dataset", f) for f in load_dataset(spec, data_dir=data_dir).files()]
    return found


def check_writable(path: Path, flag: str, kind: str, probe: bool = True) -> None:
    """Refuse an output that cannot be created as a ``kind`` (see :func:`declare_outputs`) at ``path``; with
    ``probe``, also one whose folder takes no new file."""
    try:
        _check_writable(path, flag, kind, probe)
    except OSError as e:  # a folder on the way that cannot be entered, a name too long, ...
        raise UserInputError(f"{flag} cannot be used ({e.strerror or e})", path=path,
                             fix="give a path in a folder you can write to") from None


def _check_writable(path: Path, flag: str, kind: str, probe: bool) -> None:
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
    if not probe:
        return
    try:  # permissions alone do not tell (root, read-only or special file systems): try to create a file
        fd, probe = tempfile.mkstemp(prefix=".rankdistill-probe-", dir=parent)
    except OSError as e:
        raise UserInputError(f"{flag} cannot be written: {parent} does not take new files ({e.strerror})",
                             path=path, fix="give a path in a writable folder") from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(args: argparse.Namespace) -> None:
    """Before a verb runs: each output it names (:func:`declare_outputs`) can be written, and none is one of the
    paths it reads or another of its outputs (writing it would replace what the verb reads). A verb that only
    checks its input (``run --validate-only``) writes nothing, so whether its folders take files is not tried."""
    kinds: dict[str, str] = getattr(args, "_outputs", None) or {}
    outputs = [(dest, Path(v), kind) for dest, kind in kinds.items()
               if isinstance(v := getattr(args, dest, None), str | os.PathLike) and str(v)]
    if not outputs:
        return
    writes = not getattr(args, "validate_only", False)
    inputs = _input_paths(args)
    seen: list[tuple[str, Path]] = []
    for dest, path, kind in outputs:
        flag = _flag(dest)
        check_writable(path, flag, kind, probe=writes)
        for other, p in seen + ([] if kind == "folder" else inputs):
            if _same_path(path, p):
                also = f"{flag} is also {other}"
                raise UserInputError(also if (other, p) in seen else f"{also}: writing it would replace what is "
                                     "read there", path=path, fix=f"give {flag} another path")
        seen.append((flag, path))


def _same_path(a: Path, b: Path) -> bool:
    """Whether two paths name one file or folder (links followed), also before the first exists."""
    try:
        return os.path.samefile(a, b) if a.exists() and b.exists() else a.resolve() == b.resolve()
    except OSError:
        return False
