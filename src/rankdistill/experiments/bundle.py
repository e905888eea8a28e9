"""Carry a study's results to another machine without its models.

A study that runs in several short sessions on machines that do not keep their disks (the lent GPU machines of
this project, spot instances, a laptop that finishes what a cluster started) moves its finished artifacts in
a bundle::

    python -m rankdistill.experiments.bundle pack runs/study study-bundle.tar.xz
    python -m rankdistill.experiments.bundle unpack study-bundle.tar.xz runs/study
    python -m rankdistill.experiments.bundle check study-bundle.tar.xz   # whole? how many cells?

``pack`` writes a tar archive of the study folder's own small files (config, manifest, ``report.md``,
``costs.md``) and of every finished artifact: its ``manifest.json`` and the small files that later stages and
the report read (:data:`KEEP`: groups, score stores, statistics, candidate runs, per-query results, training
summaries and loss curves). Every other file (model weights and tokenizers, the runs of evaluations, the
teacher's mining store) stays behind and is listed in the artifact's ``PRUNED`` file. Unfinished stages,
``cache/``, and what a resumed run writes again from the artifacts (:data:`REGENERATED`: the HTML and JSON
reports and the plots) stay behind too. Artifact keys hash settings and content fingerprints, never paths, so
the unpacked artifacts are found again under any folder on any machine.

The archive is xz-compressed when its name ends in ``.tar.xz`` or ``.txz`` (about half the size of gzip on
score stores and groups, which is what limits a bundle that has to travel beside other files) and gzipped
otherwise; ``unpack`` reads either.

A pruned artifact counts as finished: a resumed run reuses it and does not redo its stage. A stage that still
has to run and needs the files of a pruned input is refused by :meth:`ArtifactStore.run` with the folder to
delete; a study cell whose model was pruned before all its evaluations finished is trained again (see
``run_cell``).
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import logging
import lzma
import os
import shutil
import sys
import tarfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rankdistill.errors import UserInputError
from rankdistill.experiments.artifacts import ARTIFACTS, MANIFEST, PRUNED, finished_artifacts

logger = logging.getLogger(__name__)

KEEP: dict[str, frozenset[str]] = {
    "*": frozenset({MANIFEST, "groups.jsonl", "groups.jsonl.meta.json", "scores.db", "stats.parquet",
                    "per_query.tsv", "model/training.json", "model/losses.tsv"}),
    "candidates": frozenset({"run.trec"}),
    "teacher": frozenset({"model/crossfit.json", "model/member-*/training.json", "model/member-*/losses.tsv"}),
}
"""Files (relative to the artifact folder, ``fnmatch`` patterns) a bundle carries: for every stage, and per
stage (a cross-fitted teacher's plan and its members' training summaries)."""

REGENERATED = frozenset({"report.html", "report.json", "plots"})
"""Entries of the study folder that ``rankdistill run`` writes again from the artifacts: not carried."""

STUDY_FILES = ("config.resolved.json", "manifest.json", "report.md", "costs.md")
"""The study folder's own files a bundle carries (anything else there, such as an earlier bundle, stays)."""

INDEX = "BUNDLE-INDEX.json"
"""The first member of a bundle: every other member's name and size. ``unpack`` refuses a bundle whose members
do not match it (a copy cut short at a tar block boundary reads as a shorter, valid archive otherwise)."""

XZ_SUFFIXES = (".tar.xz", ".txz")


def _kept(stage: str, rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in (*KEEP["*"], *KEEP.get(stage, ())))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def pack(output: str | os.PathLike, dest: str | os.PathLike) -> dict[str, int]:
    """Write the bundle of study folder ``output`` to ``dest``; return counts and sizes."""
    root = Path(output)
    artifacts = root / ARTIFACTS
    if not artifacts.is_dir():
        raise UserInputError("not a study folder: it has no artifacts/", path=root,
                             fix="give the --output folder of `rankdistill run`")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    counts = {"artifacts": 0, "pruned": 0, "files": 0, "bytes_in": 0}
    mode = "w:xz" if dest.name.endswith(XZ_SUFFIXES) else "w:gz"
    entries: list[tuple[str, Path | bytes]] = []  # (name in the bundle, file or bytes), planned first
    for name in STUDY_FILES:
        if (root / name).is_file():
            entries.append((name, root / name))
    for art in finished_artifacts(artifacts):
        counts["artifacts"] += 1
        left = []
        for f in sorted(p for p in art.path.rglob("*") if p.is_file()):
            rel = f.relative_to(art.path).as_posix()
            if rel == PRUNED:
                left.extend(json.loads(f.read_text()))
            elif _kept(art.stage, rel):
                entries.append((f"{ARTIFACTS}/{art.stage}/{art.hash}/{rel}", f))
                counts["files"] += 1
                counts["bytes_in"] += f.stat().st_size
            else:
                left.append(rel)
        if left:
            counts["pruned"] += 1
            entries.append((f"{ARTIFACTS}/{art.stage}/{art.hash}/{PRUNED}",
                            json.dumps(sorted(set(left)), indent=0).encode()))
    index = [[name, len(e) if isinstance(e, bytes) else e.stat().st_size] for name, e in entries]
    try:
        with tarfile.open(tmp, mode) as tar:
            _add_bytes(tar, INDEX, json.dumps({"members": index}).encode())  # first: a cut copy still has it
            for name, e in entries:
                if isinstance(e, bytes):
                    _add_bytes(tar, name, e)
                else:
                    tar.add(e, arcname=name)
    except BaseException:  # nothing half-written is left behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    counts["bytes"] = dest.stat().st_size
    logger.info("packed %d artifacts (%d pruned), %d files, %.1f MB -> %s (%.1f MB)", counts["artifacts"],
                counts["pruned"], counts["files"], counts["bytes_in"] / 1e6, dest, counts["bytes"] / 1e6)
    return counts


def _artifact_of(name: str) -> str | None:
    """``artifacts/<stage>/<hash>`` for a member inside an artifact, ``None`` for the study's own files."""
    parts = Path(name).parts
    return "/".join(parts[:3]) if parts[0] == ARTIFACTS and len(parts) >= 4 else None


def _read_checked(src: Path) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """Open bundle ``src`` and read it through (every member's bytes), so that a truncated or corrupt archive is
    refused before anything is written; check its members against :data:`INDEX` when it has one (bundles
    written before the index existed have none) and that every artifact in it has its ``manifest.json``."""
    if not src.is_file():
        raise UserInputError("no such bundle", path=src, fix="give the file written by `bundle pack`")
    fix = "copy the bundle again, or re-create it with `bundle pack`"
    try:
        tar = tarfile.open(src, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise UserInputError(f"not a bundle ({e})", path=src, fix="give the file written by `bundle pack`") from None
    try:
        members = tar.getmembers()
        index = None
        for m in members:
            if m.isfile():
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                if m.name == INDEX:
                    index = json.loads(data)["members"]
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError, KeyError) as e:
        tar.close()
        raise UserInputError(f"the bundle is truncated or corrupt ({e})", path=src, fix=fix) from None
    content = [m for m in members if m.name != INDEX]
    if index is not None and [[m.name, m.size] for m in content] != index:
        tar.close()
        raise UserInputError(f"the bundle holds {len(content)} of the {len(index)} files its index lists, or other "
                             "ones", path=src, fix=fix)
    groups = {a for m in content if (a := _artifact_of(m.name)) is not None}
    whole = {a for m in content if (a := _artifact_of(m.name)) is not None and m.name == f"{a}/{MANIFEST}"}
    if groups - whole:
        tar.close()
        raise UserInputError(f"the bundle is incomplete: {len(groups - whole)} artifact(s) have no manifest.json, "
                             f"e.g. {sorted(groups - whole)[0]}", path=src, fix=fix)
    return tar, content


def unpack(src: str | os.PathLike, output: str | os.PathLike) -> dict[str, int]:
    """Extract bundle ``src`` into study folder ``output``. Artifacts already there are kept as they are
    (a local artifact may hold the files the bundle left out); the study folder's own files are replaced.
    The whole bundle is read and checked first: a truncated or corrupt one writes nothing."""
    src, root = Path(src), Path(output)
    counts = {"artifacts": 0, "kept_local": 0}
    tar, members = _read_checked(src)
    with tar:
        by_artifact: dict[str, list[tarfile.TarInfo]] = {}
        top = []
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith("/") or ".." in parts:
                raise UserInputError(f"unsafe member name {m.name!r}", path=src, fix="re-create the bundle")
            artifact = _artifact_of(m.name)
            if artifact is not None:
                by_artifact.setdefault(artifact, []).append(m)
            else:
                top.append(m)
        root.mkdir(parents=True, exist_ok=True)
        tar.extractall(root, members=top, filter="data")
        for name, ms in sorted(by_artifact.items()):
            target = root / name
            if (target / MANIFEST).is_file():
                counts["kept_local"] += 1
                continue
            partial = target.with_name(f".{target.name}.unpack")
            shutil.rmtree(partial, ignore_errors=True)  # left by an unpack that was killed
            if target.is_dir():  # an artifact folder without its manifest is no artifact: replaced
                shutil.rmtree(target)
            # artifacts/<stage>/<hash>/rel -> <stage>/.<hash>.unpack/rel, renamed to <hash> once complete
            moved = [m.replace(name=f"{partial.name}/{m.name[len(name) + 1:]}", deep=False) for m in ms]
            tar.extractall(partial.parent, members=moved, filter="data")
            os.replace(partial, target)
            counts["artifacts"] += 1
    logger.info("unpacked %d artifacts into %s (%d already there kept)", counts["artifacts"], root,
                counts["kept_local"])
    return counts


def check(src: str | os.PathLike) -> dict[str, int]:
    """Read bundle ``src`` through and check it as ``unpack`` does, writing nothing; return the number of finished
    artifacts per stage (``train`` counts the study's trained cells)."""
    src = Path(src)
    tar, members = _read_checked(src)
    tar.close()
    counts = Counter(a.split("/")[1] for m in members
                     if (a := _artifact_of(m.name)) is not None and m.name == f"{a}/{MANIFEST}")
    logger.info("%s is whole: %s", src, ", ".join(f"{n} {stage}" for stage, n in sorted(counts.items())) or "empty")
    return dict(counts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rankdistill.experiments.bundle", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write a bundle of a study folder's finished artifacts, without models")
    p.add_argument("output", help="the study folder (`rankdistill run --output`)")
    p.add_argument("bundle", help="the file to write: .tar.xz or .txz for xz, otherwise gzip (.tgz)")
    u = sub.add_parser("unpack", help="extract a bundle into a study folder; a later `run` resumes from it")
    u.add_argument("bundle")
    u.add_argument("output")
    c = sub.add_parser("check", help="read a bundle through and count its finished artifacts per stage")
    c.add_argument("bundle")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "pack":
            pack(args.output, args.bundle)
        elif args.cmd == "check":
            check(args.bundle)
        else:
            unpack(args.bundle, args.output)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
