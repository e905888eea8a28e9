"""Datasets from the three specifiers: a BEIR folder, a TOML manifest, or ``irds:<ir_datasets id>``."""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from rankdistill.data.docstore import DocStore
from rankdistill.data.formats import read_qrels, read_queries
from rankdistill.data.runs import Run, read_run
from rankdistill.errors import UserInputError
from rankdistill.io import require_file

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's files are (paths resolved), and its binary relevance threshold."""

    queries: Path
    qrels: Path
    candidates: Path | None = None
    rel_threshold: int = 1


@dataclass
class Dataset:
    """A test or training collection: a corpus and, per split, queries, qrels and optional candidates."""

    name: str
    corpus_path: Path
    splits: dict[str, SplitFiles]
    source: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        """Pickled (for a worker process) without the opened document store and the loaded queries and qrels,
        which the worker opens and loads again: a few hundred bytes rather than the corpus' ids and more."""
        state = {k: v for k, v in self.__dict__.items() if k != "corpus"}
        state["_cache"] = {}
        return state

    def with_absolute_paths(self) -> Dataset:
        """The same dataset with every file path absolute, for a worker whose working folder is not this
        process's (a Ray node); paths already resolved stay as they are."""
        import dataclasses

        def absolute(p: Path | None) -> Path | None:
            return None if p is None else Path(p).absolute()

        splits = {n: dataclasses.replace(sf, queries=absolute(sf.queries), qrels=absolute(sf.qrels),
                                         candidates=absolute(sf.candidates)) for n, sf in self.splits.items()}
        return Dataset(self.name, absolute(self.corpus_path), splits, self.source)

    def split_names(self) -> list[str]:
        return sorted(self.splits)

    def files(self) -> list[Path]:
        """Every file the dataset reads (corpus, and per split queries, qrels and candidates), each once."""
        out = [self.corpus_path]
        for sf in self.splits.values():
            out += [sf.queries, sf.qrels] + ([sf.candidates] if sf.candidates is not None else [])
        return list(dict.fromkeys(out))

    def _split(self, split: str) -> SplitFiles:
        if split not in self.splits:
            known = ", ".join(self.split_names()) or "none"
            raise UserInputError(f"unknown split {split!r} for dataset {self.name}; known splits: {known}",
                                 fix="pass one of them with --split")
        return self.splits[split]

    @cached_property
    def corpus(self) -> DocStore:
        """The documents, as an indexed memory-mapped store (built once and cached)."""
        return DocStore(self.corpus_path)

    def qrels(self, split: str) -> Qrels:
        key = ("qrels", split)
        if key not in self._cache:
            self._cache[key] = read_qrels(self._split(split).qrels)
        return self._cache[key]

    def judged_relevant(self, split: str | None = None) -> dict[str, set[str]]:
        """``{query_id: documents judged relevant (grade > 0)}`` of one split, or of every split when ``split``
        is None: the documents no training group may use as a negative."""
        out: dict[str, set[str]] = {}
        for name in [split] if split is not None else self.split_names():
            for qid, rels in self.qrels(name).items():
                out.setdefault(qid, set()).update(d for d, r in rels.items() if r > 0)
        return out

    def all_queries(self, split: str) -> dict[str, str]:
        """Every query in the split's query file (judged or not)."""
        files = self._split(split)
        key = ("queries", files.queries)
        if key not in self._cache:
            self._cache[key] = read_queries(files.queries)
        return self._cache[key]

    def queries(self, split: str) -> dict[str, str]:
        """The split's queries. When the query file is shared by several splits (BEIR), only the split's
        judged queries; otherwise every query of the file."""
        files = self._split(split)
        queries = self.all_queries(split)
        shared = sum(1 for s in self.splits.values() if s.queries == files.queries) > 1
        if shared:
            judged = self.qrels(split)
            return {q: t for q, t in queries.items() if q in judged}
        return queries

    def candidates(self, split: str) -> Run | None:
        files = self._split(split)
        return None if files.candidates is None else read_run(files.candidates)

    def rel_threshold(self, split: str) -> int:
        return self._split(split).rel_threshold


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
        if (folder / name).exists():
            require_file(folder / name, name)  # a folder by that name: said so, not "missing"
    return None


def _load_beir(folder: Path) -> Dataset:
    corpus = _find(folder, "corpus.jsonl")
    queries = _find(folder, "queries.jsonl")
    if corpus is None or queries is None:
        missing = "corpus.jsonl" if corpus is None else "queries.jsonl"
        raise UserInputError(f"not a BEIR folder: {missing} (or .gz) is missing", path=folder,
                             fix="give a BEIR folder, a dataset .toml manifest or an irds: id")
    qrels_dir = folder / "qrels"
    splits: dict[str, SplitFiles] = {}
    if qrels_dir.is_dir():
        for f in sorted(qrels_dir.iterdir()):
            name = f.name[:-3] if f.name.endswith(".gz") else f.name
            if name.endswith(".tsv"):
                splits[name[:-4]] = SplitFiles(queries=queries, qrels=f)
    if not splits:
        raise UserInputError("BEIR folder has no qrels/<split>.tsv files", path=folder)
    return Dataset(name=folder.name, corpus_path=corpus, splits=splits, source=str(folder))


_MANIFEST_KEYS = {"name", "corpus", "splits", "description", "queries", "rel_threshold"}
_SPLIT_KEYS = {"queries", "qrels", "candidates", "rel_threshold"}


def _load_manifest(path: Path) -> Dataset:
    """The dataset a TOML manifest describes; an error about one of its keys names the key's line."""
    from rankdistill.tomlines import located

    try:
        return _read_manifest(path)
    except UserInputError as e:
        raise located(e, path) from None


def _read_manifest(path: Path) -> Dataset:
    from rankdistill.tomlines import decode_error

    try:
        with open(path, "rb") as fh:
            cfg = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise decode_error(e, path) from None
    unknown = set(cfg) - _MANIFEST_KEYS
    if unknown:
        raise UserInputError(f"unknown key(s) {', '.join(repr(k) for k in sorted(unknown))}", path=path,
                             fix=f"known keys: {', '.join(sorted(_MANIFEST_KEYS))}")
    if "corpus" not in cfg:
        raise UserInputError("manifest has no 'corpus' key", path=path)
    base = path.parent

    def resolve(value: object, key: str) -> Path:
        if not isinstance(value, str):
            raise UserInputError(f"'{key}' must be a path string", path=path)
        p = (base / value).resolve()
        if not p.is_file():
            kind = "is a directory" if p.is_dir() else "is not a regular file" if p.exists() else "not found"
            raise UserInputError(f"file named by '{key}' {kind}: {p}", path=path, fix="fix the path")
        return p

    corpus = resolve(cfg["corpus"], "corpus")
    splits_cfg = cfg.get("splits")
    if not isinstance(splits_cfg, dict) or not splits_cfg:
        raise UserInputError("manifest has no [splits.<name>] tables", path=path)
    splits = {}
    for name, sc in splits_cfg.items():
        if not isinstance(sc, dict):
            raise UserInputError(f"'splits.{name}' must be a table", path=path)
        bad = set(sc) - _SPLIT_KEYS
        if bad:
            raise UserInputError(f"unknown key(s) {', '.join(repr(f'splits.{name}.{k}') for k in sorted(bad))}",
                                 path=path,
                                 fix=f"known keys: {', '.join(sorted(_SPLIT_KEYS))}")
        q = sc.get("queries", cfg.get("queries"))
        if q is None or "qrels" not in sc:
            raise UserInputError(f"[splits.{name}] needs 'queries' and 'qrels'", path=path)
        thr = sc.get("rel_threshold", cfg.get("rel_threshold", 1))
        if not isinstance(thr, int) or isinstance(thr, bool):
            raise UserInputError(f"'splits.{name}.rel_threshold' must be an integer", path=path,
                                 fix="the lowest relevance grade that counts as relevant, e.g. rel_threshold = 2")
        splits[name] = SplitFiles(
            queries=resolve(q, f"splits.{name}.queries"),
            qrels=resolve(sc["qrels"], f"splits.{name}.qrels"),
            candidates=resolve(sc["candidates"], f"splits.{name}.candidates") if "candidates" in sc else None,
            rel_threshold=thr,
        )
    return Dataset(name=str(cfg.get("name", path.stem)), corpus_path=corpus, splits=splits, source=str(path))


def resolve_spec(spec: str, data_dir: str | os.PathLike | None = None) -> Path | str:
    """Turn a specifier into an existing path (or keep an ``irds:`` id).

    Relative paths that do not exist are looked up under ``data_dir`` or ``$RANKDISTILL_DATA``, so
    ``--dataset scifact --data-dir ../shared/data`` works.
    """
    if spec.startswith("irds:"):
        return spec
    p = Path(spec).expanduser()
    if p.exists():
        return p
    root = data_dir or os.environ.get("RANKDISTILL_DATA")
    if root and not p.is_absolute():
        candidate = Path(root).expanduser() / p
        if candidate.exists():
            return candidate
    where = f" (also looked under {root})" if root else ""
    raise UserInputError(f"dataset {spec!r} not found{where}",
                         fix="give a BEIR folder, a .toml manifest or irds:<id>; set --data-dir or RANKDISTILL_DATA")


def load_dataset(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset from a BEIR folder, a TOML manifest, or ``irds:<ir_datasets id>``."""
    resolved = resolve_spec(str(spec), data_dir)
    if isinstance(resolved, str):
        from rankdistill.data.irds import load_irds

        return load_irds(resolved[len("irds:"):])
    if resolved.is_dir():
        manifest = resolved / "dataset.toml"
        return _load_manifest(manifest) if manifest.is_file() else _load_beir(resolved)
    if resolved.suffix == ".toml":
        return _load_manifest(resolved)
    raise UserInputError("not a dataset specifier", path=resolved,
                         fix="give a BEIR folder, a .toml manifest or irds:<id>")


def dataset_fingerprint(spec: str | os.PathLike) -> dict:
    """What a dataset specifier means for cache keys: the content fingerprint of the folder or file
    (:func:`rankdistill.io.fingerprint`), plus the files a TOML manifest names outside of it, by their path
    relative to the manifest and their content (a manifest file alone would only hash its own text, so two
    collections with the same manifest would share keys). ``irds:`` ids stand for themselves, with the rule
    that reads their documents."""
    from rankdistill.io import content_digest, fingerprint

    if str(spec).startswith("irds:"):
        # the id, and how documents without a text field are read (their text changed once: see irds._doc_from)
        return {"irds": str(spec), "text": "default_text"}
    path = Path(spec)
    out: dict = fingerprint(path)
    manifest = path if path.is_file() else path / "dataset.toml"
    if manifest.suffix == ".toml" and manifest.is_file():
        inside = path.resolve() if path.is_dir() else None
        outside = [f for f in _load_manifest(manifest).files() if inside is None or not f.is_relative_to(inside)]
        if outside:
            out["referenced"] = [(os.path.relpath(f, manifest.resolve().parent), content_digest(f))
                                 for f in sorted(outside)]
    return out

