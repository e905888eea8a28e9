"""Small file helpers: atomic writes, transparent gzip, tolerant UTF-8 decoding, content fingerprints, and
whether a progress bar has a terminal to draw on."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rankdistill.errors import UserInputError

logger = logging.getLogger(__name__)

_warned_decoding: set[str] = set()


def bar_on_terminal(show: bool) -> bool:
    """``show``, and only where standard error is a terminal. For the libraries that draw their bar whenever told
    to (bm25s, sentence-transformers), even into a log file or a study worker's output; our own tqdm bars get the
    same with ``disable=None``."""
    return bool(show) and sys.stderr.isatty()


def require_file(path: str | Path, what: str = "file", fix: str = "check the path") -> Path:
    """Return ``path`` as a :class:`Path`, or raise :class:`UserInputError` if it is not a readable file (not
    there: ``fix``; a folder or another kind of file: said so)."""
    p = Path(path)
    if not p.exists():
        raise UserInputError(f"{what} not found", path=p, fix=fix)
    if not p.is_file():
        kind = "a directory" if p.is_dir() else "not a regular file"
        raise UserInputError(f"{what} is {kind}", path=p, fix="give a file")
    return p


def _umask_mode(base: int = 0o666) -> int:
    """The mode a newly created file would get (``0o666`` less the process umask; ``0o777`` for a folder)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def _warn_decoding_once(path: Path) -> None:
    key = str(path)
    if key not in _warned_decoding:
        _warned_decoding.add(key)
        logger.warning("%s: contains bytes that are not valid UTF-8; decoded them with replacement characters",
                       path)


@contextlib.contextmanager
def _whole_gzip(path: Path) -> Iterator[None]:
    """Turn the errors of reading a truncated or corrupt ``.gz`` file (or one that is not gzipped) into one
    :class:`UserInputError` naming it."""
    if path.suffix != ".gz":
        yield
        return
    try:
        yield
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        reason = "it ends before its end-of-stream marker" if isinstance(e, EOFError) else str(e)
        raise UserInputError(f"not a whole gzip file ({reason})", path=path,
                             fix="compress it again, or give the uncompressed file without .gz") from None


class _ReplacingDecoder(io.TextIOBase):
    """Line iterator over a binary stream that decodes UTF-8 and warns once per file on bad bytes."""

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        self._raw = raw
        self._path = path

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        with _whole_gzip(self._path):
            for chunk in self._raw:
                try:
                    yield chunk.decode("utf-8")
                except UnicodeDecodeError:
                    _warn_decoding_once(self._path)
                    yield chunk.decode("utf-8", errors="replace")

    def read(self, size: int | None = -1) -> str:  # type: ignore[override]
        with _whole_gzip(self._path):
            data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            _warn_decoding_once(self._path)
            return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        self._raw.close()


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for binary reading, gunzipping it when the name ends with ``.gz``."""
    p = require_file(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


@contextlib.contextmanager
def open_text(path: str | Path) -> Iterator[_ReplacingDecoder]:
    """Open a (possibly gzipped) UTF-8 text file; invalid bytes are replaced and warned about once."""
    p = Path(path)
    raw = open_binary(p)
    reader = _ReplacingDecoder(raw, p)
    try:
        yield reader
    finally:
        raw.close()


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line_without_newline)`` for a (possibly gzipped) text file, 1-based."""
    with open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            yield n, line.rstrip("\r\n")


def iter_json_objects(path: str | Path, fix: str = "each line must be one JSON object"
                      ) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-empty line of a JSONL file (gzipped or not).

    A line that is not valid JSON, or not a JSON object, raises :class:`UserInputError` naming the file and
    line, with ``fix`` as the advice.
    """
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserInputError(f"not valid JSON ({e.msg})", path=path, line=n, fix=fix) from None
        if not isinstance(obj, dict):
            raise UserInputError("expected a JSON object", path=path, line=n, fix=fix)
        yield n, obj


def json_id(value: object, key: str, path: str | Path, line: int) -> str:
    """An id read from JSON as a string: a string, or an integer (the paper's files write ids as numbers);
    ``null``, booleans, floats, lists and objects raise naming the file and line (``str()`` made ``null`` the
    id ``"None"``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise UserInputError(f"{key} must be a string (or an integer) id, found {json.dumps(value)[:40]}", path=path,
                         line=line, fix=f'write it as a JSON string, e.g. "{key}": "123"')


_NUMBER_CHARS = "0123456789.eE+-"


def iter_object_items(fh: IO[str], chunk_chars: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """The ``(key, value)`` items of a file holding one JSON object, read ``chunk_chars`` at a time: one value in
    memory at a time, where ``json.load`` would hold the whole object (the paper's teacher file for MS MARCO,
    ``{qid: {docid: score}}``, is tens of millions of scores).

    Values are parsed by :class:`json.JSONDecoder`, so they are what ``json.loads`` gives (``NaN`` included).
    Raises :class:`ValueError` for malformed content, naming the character position in the whole text.
    """
    decoder = json.JSONDecoder()
    buf, base, pos, eof = "", 0, 0, False  # base: the position in the whole text of buf[0]

    def more() -> None:
        nonlocal buf, base, pos, eof
        text = fh.read(max(chunk_chars, len(buf) - pos))  # doubling: a value longer than a chunk is read
        # in a number of steps that grows with the log of its length, not its length
        eof = not text
        base += pos
        buf, pos = buf[pos:] + text, 0

    def skip_space() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\n\r":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if eof:
                return ""
            more()

    def value() -> object:
        nonlocal pos
        while True:
            try:
                got, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                # text cut off by the chunk fails at its end, or at the start of an unterminated string; an error
                # elsewhere is in the file (so a bad value early in a big file does not read the rest first)
                if eof or not (e.pos >= len(buf) - 16 or e.msg.startswith("Unterminated string")):
                    raise json.JSONDecodeError(e.msg, buf, e.pos) from None
                more()
                continue
            if not eof and not isinstance(got, (str, dict, list)) and not buf[end:].lstrip(_NUMBER_CHARS):
                more()  # a number or literal may go on in the next chunk ("1." or "1e" parse as 1)
                continue
            pos = end
            return got

    def expect(chars: str, what: str) -> str:
        nonlocal pos
        c = skip_space()
        if not c or c not in chars:
            raise json.JSONDecodeError(f"expected {what}", buf, pos)
        pos += 1
        return c

    try:
        expect("{", "a JSON object")
        if skip_space() == "}":
            pos += 1
        else:
            while True:
                if skip_space() != '"':
                    raise json.JSONDecodeError("expected a property name in double quotes", buf, pos)
                key = value()
                expect(":", "':'")
                skip_space()
                yield key, value()  # type: ignore[misc]
                if expect(",}", "',' or '}'") == "}":
                    break
        if skip_space():
            raise json.JSONDecodeError("extra data after the object", buf, pos)
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} at character {base + e.pos}") from None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                 compress: bool | None = None) -> Iterator[IO]:
    """Write to a temporary file next to ``path`` and rename it over ``path`` only on success.

    A crash or an exception leaves no half-written file behind: the temporary file is removed and any
    existing file at ``path`` is untouched. A path ending in ``.gz`` is written gzipped (``compress=None``; every
    reader here takes ``.gz`` as gzip), with no file name or time in the gzip header, so the same content gives
    the same bytes; ``compress`` True or False decides regardless of the name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    gz = target.suffix == ".gz" if compress is None else compress
    try:
        with os.fdopen(fd, "wb" if gz else mode, encoding=None if binary or gz else encoding) as fh:
            if gz:
                with gzip.GzipFile(filename="", fileobj=fh, mode="wb", mtime=0) as z:
                    if binary:
                        yield z
                    else:
                        with io.TextIOWrapper(z, encoding=encoding) as text:
                            yield text
            else:
                yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone, or a folder a platform (Windows) will not open: nothing more to do
        return
    try:
        os.fsync(fd)
    except OSError:  # a filesystem that cannot sync a folder
        pass
    finally:
        os.close(fd)


def seal_folder(folder: Path) -> None:
    """Make a folder built under a temporary name ready to be renamed into place: the usual permissions (a
    ``mkdtemp`` folder is private to its user, so another user sharing the cache could not read it, rebuild it,
    and then fail to rename over it), and every file and the folder on disk (a power cut after the rename
    could otherwise leave empty files that look finished)."""
    os.chmod(folder, _umask_mode(0o777))
    for f in folder.rglob("*"):
        if not f.is_symlink():
            _fsync(f)  # files, and the subfolders that list them
    _fsync(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that need a file name (parquet, numpy, ...).

    The temporary file is renamed to ``path`` when the block exits normally and removed otherwise.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            os.chmod(tmp, _umask_mode())
            _fsync(Path(tmp))  # what is renamed into place is on disk: a power cut cannot leave an empty file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def lock(path: str | Path, *, exclusive: bool = True, blocking: bool = True) -> int | None:
    """Take an advisory ``flock`` on ``path`` (created if absent) and return its open descriptor, which holds
    the lock until :func:`unlock` (or the process ends, a kill included). ``None`` where ``blocking`` is false
    and another process holds a conflicting lock. Where locks are not available (no ``flock`` on the platform,
    or a filesystem without locks), ``-1``: the caller goes on unlocked, as before locks were taken."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return -1
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:  # ENOLCK, EOPNOTSUPP: a filesystem that keeps no locks
        os.close(fd)
        logger.debug("no lock on %s (%s); going on without", path, e)
        return -1
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock(fd: int | None) -> None:
    """Release a lock :func:`lock` took (closing its descriptor)."""
    if fd is not None and fd >= 0:
        os.close(fd)


NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "glusterfs",
                                 "fuse.glusterfs", "ceph", "fuse.ceph", "fuse.sshfs", "afs", "9p", "panfs", "wekafs"})


def network_filesystem(path: Path) -> str | None:
    """The type of the network (or FUSE) filesystem ``path`` is on (from ``/proc/mounts``, the longest mount
    point that holds it), or ``None`` for a local one or where that cannot be told. Their file times and
    locks cannot be trusted as a local disk's: a score store there keeps no write-ahead log, and a file's
    digest there is not kept on disk."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind if kind in NETWORK_FILESYSTEMS or (kind or "").startswith("fuse.") else None


_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}

#: Files at least this large have their digest kept on disk too (``<cache root>/digests``), so that the next
#: process, or each worker of a fanned-out job, does not read them again: hashing an 11 GB teacher takes about
#: 25 s, a gzipped MS MARCO collection about 10 s. Smaller files are hashed faster than the memo is looked up.
DISK_MEMO_BYTES = 16 << 20


def cache_root() -> Path:
    """``$RANKDISTILL_CACHE`` or ``~/.cache/rankdistill``: the folder of every cache this package keeps."""
    return Path(os.environ.get("RANKDISTILL_CACHE") or Path.home() / ".cache" / "rankdistill")


def _disk_memo(key: tuple) -> Path:
    name = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
    return cache_root() / "digests" / name[:2] / name


def _read_disk_memo(key: tuple) -> str | None:
    try:
        text = _disk_memo(key).read_text().strip()
    except OSError:
        return None
    return text if len(text) == 32 and all(c in "0123456789abcdef" for c in text) else None


def _write_disk_memo(key: tuple, digest: str) -> None:
    try:
        with atomic_write(_disk_memo(key)) as fh:
            fh.write(digest + "\n")
    except OSError as e:  # a read-only or full cache only costs the next process a re-read
        logger.debug("could not keep the digest of %s: %s", key[0], e)


DIGEST_MEMO_VERSION = 1
DIGEST_SETTLE_NS = 2_000_000_000
"""A file changed this recently has its digest kept in this process only (git's "racy clean" rule)."""


def content_digest(path: Path) -> str:
    """BLAKE2b of a file's bytes, of the decompressed bytes for ``.gz`` (so a gzipped copy of a collection,
    whatever its gzip header says, is the same dataset).

    Memoised by (path, device, inode, size, mtime, ctime) of the opened file: a rewrite changes the ctime even
    where the size and a restored mtime stay the same. The memo is per process, and on disk for files of at
    least :data:`DISK_MEMO_BYTES` (see :func:`cache_root`), except for a file on a network or FUSE filesystem
    (whose times may be cached or made up), one changed in the last two seconds (a change within the times'
    granularity could keep them), or one that changed while it was read. A copied or moved file is read
    again."""
    with open(path, "rb") as raw:
        st = os.fstat(raw.fileno())  # of what is read (on NFS, opening refreshes the cached attributes)
        key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _DIGESTS:
            return _DIGESTS[key]
        on_disk = st.st_size >= DISK_MEMO_BYTES and network_filesystem(path.parent) is None
        disk_key = (DIGEST_MEMO_VERSION, *key)
        digest = _read_disk_memo(disk_key) if on_disk else None
        if digest is None:
            h = hashlib.blake2b(digest_size=16)
            with _whole_gzip(path), (gzip.open(raw, "rb") if path.suffix == ".gz" else contextlib.nullcontext(raw)
                                     ) as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
            after = os.fstat(raw.fileno())
            steady = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == key[3:]
            settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > DIGEST_SETTLE_NS
            if on_disk and steady and settled:
                _write_disk_memo(disk_key, digest)
    _DIGESTS[key] = digest
    return digest


def value_digest(value: object) -> str:
    """BLAKE2b (32 hex digits) of a JSON-serialisable value, keys sorted: one short name for a fingerprint."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=16).hexdigest()


def fingerprint(path: Path) -> dict:
    """Identity of a dataset or model on disk: the names (``.gz`` dropped) and content digests of its files.

    Neither the folder's location nor the files' times take part, so a study's artifacts stay valid when the
    study moves to another machine or checkout (see :mod:`rankdistill.experiments.bundle`), and a gzipped copy
    of a collection is the same dataset as the plain one."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = []
    for f in files:
        name = f.name if f == path else str(f.relative_to(path))
        out.append((name.removesuffix(".gz"), content_digest(f)))
    return {"files": out}
