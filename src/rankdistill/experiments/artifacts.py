"""Content-addressed stage artifacts: ``OUTPUT/artifacts/<stage>/<hash>/``.

The hash covers the stage name, its settings and the hashes of its input artifacts, so re-running a config
does no work, changing one grid axis re-runs only what depends on it, and two configs sharing a prefix of
the pipeline share its artifacts. A stage works in ``<stage>/.<hash>.partial/`` (a stable name, so stages
with their own resume -- training checkpoints, the score store -- continue after a kill) and the folder is
renamed to ``<hash>/`` only after ``manifest.json`` is written: a folder without the leading dot is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, lock, seal_folder, unlock

logger = logging.getLogger(__name__)

ARTIFACTS = "artifacts"
"""The folder of a study's output that holds its :class:`ArtifactStore`."""

MANIFEST = "manifest.json"
"""Written last into an artifact's work folder: a folder ``<stage>/<hash>/`` with it is a finished artifact."""

PRUNED = "PRUNED"
"""The file listing what a results bundle left out of an artifact; its presence marks the artifact as pruned
(see :mod:`.bundle`)."""

_VERSIONED = ("rankdistill", "torch", "transformers", "sentence-transformers", "bm25s", "ir_measures", "numpy")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass(frozen=True)
class Artifact:
    """A finished stage output."""

    stage: str
    hash: str
    path: Path
    manifest: dict

    @property
    def info(self) -> dict:
        return self.manifest.get("info", {})

    def file(self, name: str) -> Path:
        """The path of file or folder ``name`` of this artifact; :class:`PrunedFile` when a results bundle left
        it behind (see :mod:`.bundle`)."""
        if self.lacks(name):
            raise PrunedFile(f"{self.stage} artifact came from a results bundle without {name!r}, and a stage "
                             "that has to run needs it", path=self.path,
                             fix="delete that folder so the run rebuilds it, and the artifacts made from it")
        return self.path / name

    @property
    def pruned(self) -> bool:
        """Whether a results bundle left some of its files behind."""
        return (self.path / PRUNED).is_file()

    def lacks(self, name: str) -> bool:
        """Whether a results bundle left file ``name`` (or anything under folder ``name``) behind."""
        if not self.pruned:
            return False
        left = json.loads((self.path / PRUNED).read_text())
        return any(x == name or x.startswith(name.rstrip("/") + "/") for x in left)


class PrunedFile(UserInputError):
    """A stage that has to run needs a file that a results bundle did not carry."""


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _leaves(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: value}`` of a stage's settings, with a mapping's fields as ``name.field`` (two levels: a
    model's or a dataset's fingerprint stays one setting)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, Mapping) and v:
            out.update({f"{k}.{f}": x for f, x in v.items()})
        else:
            out[k] = v
    return out


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _finished(stage: str, key: str, path: Path) -> Artifact | None:
    """The artifact in folder ``path`` if it is finished (has its manifest), else ``None``; a manifest that is
    not JSON is one line naming it."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None
    try:
        return Artifact(stage, key, path, json.loads(manifest.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserInputError("not a valid artifact manifest", path=manifest,
                             fix="delete that artifact's folder; a run makes it again") from None


def finished_artifacts(root: str | os.PathLike, stage: str | None = None) -> Iterator[Artifact]:
    """The finished artifacts under store folder ``root``, by stage then hash, of every stage or of ``stage``
    only (none where ``root`` does not exist). Work folders (``.<hash>.partial``) and the remains of a failed
    stage (no manifest) are left out."""
    root = Path(root)
    if not root.is_dir():
        return
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir() and stage in (None, p.name)):
        for path in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            art = _finished(stage_dir.name, path.name, path)
            if art is not None:
                yield art


def _lock_file(path: Path, what: str) -> int | None:
    """Hold the lock of ``path``, waiting for another process that holds it. A holder removes the file when it
    is done, so a lock taken on a file no longer at ``path`` (or another file now there) excludes nobody: it
    is let go and taken again on the file that is there."""
    while True:
        held = lock(path, blocking=False)
        if held is None:
            logger.info("%s: another process is computing it; waiting for it", what)
            held = lock(path)
        if held is None or held < 0 or _same_file(path, held):  # None, -1: no locks on this platform or filesystem
            return held
        unlock(held)


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (not removed, nor replaced by another)."""
    try:
        on_disk, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


class ArtifactStore:
    """Runs stage functions once per (stage, settings, inputs) and remembers their outputs."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def discard(self, art: Artifact) -> None:
        """Delete a finished artifact. Its folder is renamed out of the way first, so a kill part-way through
        cannot leave a manifest beside half of its files (which would be trusted as finished)."""
        doomed = art.path.with_name(f".{art.path.name}.discard-{os.getpid()}")
        os.replace(art.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def key(self, stage: str, settings: Mapping[str, Any], inputs: Mapping[str, Artifact]) -> str:
        return stable_hash({"stage": stage, "settings": settings,
                            "inputs": {k: v.hash for k, v in sorted(inputs.items())}})

    def get(self, stage: str, key: str) -> Artifact | None:
        return _finished(stage, key, self.root / stage / key)

    def nearest_differences(self, stage: str, settings: Mapping[str, Any], inputs: Mapping[str, Artifact]
                            ) -> list[str] | None:
        """What keeps the store's artifacts of ``stage`` from being this one: the settings (``name`` or
        ``name.field``, two levels down) and inputs (``inputs.name``) in which the finished artifact of that
        stage nearest to it differs, fewest first; ``[]`` when it is in the store, ``None`` when the stage has
        no finished artifact to compare with.

        A stage that a study has once (its teacher) is made again when any of these change, also when nobody
        meant to change them (another copy of the model, another data folder): this names what did."""
        mine = {**_leaves(settings), **{f"inputs.{k}": v.hash for k, v in inputs.items()}}
        best: list[str] | None = None
        for art in finished_artifacts(self.root, stage):
            m = art.manifest
            theirs = {**_leaves(m.get("settings", {})),
                      **{f"inputs.{k}": v.get("hash") for k, v in m.get("inputs", {}).items()}}
            diff = sorted(k for k in mine.keys() | theirs.keys()
                          if k not in mine or k not in theirs or stable_hash(mine[k]) != stable_hash(theirs[k]))
            if best is None or len(diff) < len(best):
                best = diff
        return best

    def run(self, stage: str, settings: Mapping[str, Any], inputs: Mapping[str, Artifact],
            fn: Callable[[Path], dict | None], seed: int | None = None, gpu: bool = False) -> tuple[Artifact, bool]:
        """Return ``(artifact, reused)``; run ``fn(workdir) -> info`` only when the artifact does not exist."""
        key = self.key(stage, settings, inputs)
        done = self.get(stage, key)
        if done is not None:
            return done, True
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        # one process at a time works on an artifact: two runs of one study (a run started again while the first
        # still works) wrote into the same work folder, and the first to finish published a mix of both
        lock_file = stage_dir / f".{key}.lock"
        held = _lock_file(lock_file, f"{stage} {key}")
        try:
            return self._run_locked(stage, key, settings, inputs, fn, seed, gpu)
        finally:
            # removed while still held (if it is still ours, not a newer one): a process waiting on it finds the
            # artifact finished when it gets it
            if held is not None and held >= 0 and _same_file(lock_file, held):
                lock_file.unlink(missing_ok=True)
            unlock(held)

    def _run_locked(self, stage: str, key: str, settings: Mapping[str, Any], inputs: Mapping[str, Artifact],
                    fn: Callable[[Path], dict | None], seed: int | None, gpu: bool) -> tuple[Artifact, bool]:
        done = self.get(stage, key)  # finished by the process that held the lock before
        if done is not None:
            return done, True
        stage_dir = self.root / stage
        work = stage_dir / f".{key}.partial"
        work.mkdir(exist_ok=True)
        start, started = time.perf_counter(), time.time()
        try:
            info = fn(work) or {}
        except BaseException:  # a work folder left empty (or with notes only) has nothing to resume: not left behind
            if work.is_dir() and all(p.name.startswith(".") for p in work.iterdir()):
                shutil.rmtree(work, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        manifest = {
            "stage": stage, "hash": key, "settings": settings,
            "inputs": {k: {"stage": v.stage, "hash": v.hash} for k, v in sorted(inputs.items())},
            "seed": seed, "seconds": round(seconds, 3), "gpu_seconds": round(seconds, 3) if gpu else 0.0,
            "started": round(started, 3), "finished": round(started + seconds, 3),
            "bytes": _size(work), "versions": versions(), "info": info,
        }
        seal_folder(work)  # the stage's files are on disk before the manifest says they are finished
        with atomic_write(work / MANIFEST) as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        final = stage_dir / key
        if final.is_dir() and not (final / MANIFEST).is_file():  # no artifact: the remains of a failure
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(work, final)
        except OSError:  # a concurrent worker finished the same artifact first
            shutil.rmtree(work, ignore_errors=True)
        art = self.get(stage, key)
        assert art is not None
        return art, False
