"""Cross-fitted teachers: k models, each trained on every training query but one fold's, so that each
training query is scored only by models that never saw it.

Why. Distillation labels a student's training queries with the teacher's scores. When the teacher was trained
on those same queries for several epochs, as a teacher must be on a small collection (SciFact has 809 training
queries), it is close to certain on them: its scores there are nearly one-hot, distillation turns into
contrastive labels, and the teacher's ranking entropy (the statistic of the entropy study) collapses towards
zero. Measured on a proxy of the study's teacher: the positive ranked first in 93% of its own training queries'
BM25 groups against 72% of unseen queries', median normalised entropy 0.014 against 0.077 (``docs/results.md``).
A teacher trained once on hundreds of thousands of queries, as in the paper, memorises little. Cross-fitting
gives the small collection the same property: the labels of every query are out-of-sample predictions
(out-of-fold predictions as in stacking, Wolpert 1992, "Stacked generalization"; cross-fitting as in
Chernozhukov et al. 2018, "Double/debiased machine learning").

The score of a pair ``(q, d)`` is the mean of the scores that the members which did not train on ``q`` give it:

    s(q, d) = (1 / |M(q)|) * sum_{m in M(q)} s_m(q, d),   M(q) = {m : q not in T_m},

where ``T_m`` is member ``m``'s training queries. With k folds, a training query of fold ``f`` has
``M(q) = {f}`` (one model call); a query no member trained on (a test query) gets the mean of all k members.
A query every member trained on has no out-of-sample score and is refused.

On disk, a cross-fitted teacher is a folder holding the member model folders and ``crossfit.json``::

    {"format": "rankdistill-crossfit", "version": 1,
     "members": [{"model": "member-0", "trained_on": ["q1", "q7", ...]}, ...], ...}

Member paths are relative to the folder. Everywhere a teacher model is accepted (``rankdistill mine``,
``score``, ``rerank``, a study's ``[teacher] model``), such a folder is one teacher.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rankdistill.errors import UserInputError, is_integer
from rankdistill.io import atomic_write
from rankdistill.teachers.models import Teacher, TeacherConfig, load_teacher

CROSSFIT_FILE = "crossfit.json"
FORMAT = "rankdistill-crossfit"
COMBINATION = "mean over the members that did not train on the query"


def assign_folds(query_ids: Iterable[str], k: int, seed: int) -> list[list[str]]:
    """Split ``query_ids`` into ``k`` folds of sizes differing by at most one, reproducibly.

    The ids are sorted, permuted by ``numpy.random.default_rng(seed)``, and dealt out in turn (fold ``f`` gets
    positions ``f, f + k, f + 2k, ...`` of the permutation), so the folds depend only on the set of ids, ``k``
    and ``seed``. Each fold keeps the permuted order.
    """
    if not is_integer(seed):  # None would draw other folds each time
        raise UserInputError(f"the fold seed must be an integer, got {seed!r}", fix="e.g. seed 0")
    if isinstance(query_ids, str):
        raise TypeError("query_ids must be a collection of query ids, not one string")
    ids = sorted(dict.fromkeys(str(q) for q in query_ids))
    if k < 2:
        raise UserInputError(f"cross-fitting needs at least 2 folds, got {k}")
    if len(ids) < k:
        raise UserInputError(f"cannot split {len(ids)} queries into {k} folds", fix="use fewer folds")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [[ids[i] for i in order[f::k]] for f in range(k)]


def _digest(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CrossFitPlan:
    """The members of a cross-fitted teacher and the queries each was trained on."""

    folder: Path
    members: tuple[Path, ...]
    trained_on: tuple[frozenset[str], ...]

    def route(self, query_id: str) -> tuple[int, ...]:
        """The members that did not train on ``query_id`` (``M(q)`` in the module's formula)."""
        out = tuple(m for m, seen in enumerate(self.trained_on) if query_id not in seen)
        if not out:
            raise UserInputError(
                f"query {query_id!r} is among the training queries of every member of the cross-fitted teacher "
                f"{self.folder}, so it has no out-of-sample score",
                fix="score only queries that at least one member did not train on")
        return out

    def identity(self) -> list[dict]:
        """Per member: its training queries' count and digest (what the scores depend on besides the model)."""
        return [{"trained_on": len(s), "trained_on_sha256": _digest(s)} for s in self.trained_on]

    def combine(self, scored: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
        """Merge the members' ``{query: {doc: score}}`` (member ``m``'s holding only queries it did not train on)
        into the cross-fitted scores: per pair, the mean over the members that scored it."""
        if len(scored) != len(self.members):
            raise ValueError(f"expected {len(self.members)} members' scores, got {len(scored)}")
        sums: dict[str, dict[str, float]] = {}
        counts: dict[str, dict[str, int]] = {}
        for run in scored:
            for q, docs in run.items():
                s, c = sums.setdefault(q, {}), counts.setdefault(q, {})
                for d, v in docs.items():
                    s[d] = s.get(d, 0.0) + float(v)
                    c[d] = c.get(d, 0) + 1
        return {q: {d: v / counts[q][d] for d, v in docs.items()} for q, docs in sums.items()}


def is_crossfit(path: str | Path) -> bool:
    """Whether ``path`` is a cross-fitted teacher's folder."""
    return (Path(path).expanduser() / CROSSFIT_FILE).is_file()


def read_crossfit(path: str | Path) -> CrossFitPlan:
    """Read and check ``<path>/crossfit.json`` (see the module docstring)."""
    folder = Path(path).expanduser().resolve()
    file = folder / CROSSFIT_FILE
    fix = "write it with rankdistill.teachers.crossfit.write_crossfit, or let a study train it (teacher.train.folds)"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("not a cross-fitted teacher: no crossfit.json", path=folder, fix=fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserInputError(f"unreadable cross-fitted teacher file ({e})", path=file, fix=fix) from None
    members = meta.get("members") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(members, list):
        raise UserInputError(f"not a {FORMAT} file (it needs \"format\": \"{FORMAT}\" and a \"members\" list)",
                             path=file, fix=fix)
    if len(members) < 2:
        raise UserInputError(f"a cross-fitted teacher needs at least 2 members, the file has {len(members)}",
                             path=file, fix=fix)
    paths, seen = [], []
    for i, m in enumerate(members):
        ok = isinstance(m, dict) and isinstance(m.get("model"), str) and isinstance(m.get("trained_on"), list) \
            and all(isinstance(q, str) for q in m["trained_on"])
        if not ok:
            raise UserInputError(f"member {i} needs \"model\" (a folder) and \"trained_on\" (a list of query ids)",
                                 path=file, fix=fix)
        p = (folder / m["model"]).resolve()
        if not p.is_dir():
            raise UserInputError(f"member {i}'s model folder {m['model']!r} is missing", path=file,
                                 fix="keep the member folders beside crossfit.json")
        paths.append(p)
        seen.append(frozenset(m["trained_on"]))
    return CrossFitPlan(folder, tuple(paths), tuple(seen))


def write_crossfit(folder: str | Path, members: Sequence[tuple[str, Iterable[str]]], **meta: Any) -> Path:
    """Write ``<folder>/crossfit.json`` for members ``(model folder relative to folder, its training query ids)``;
    ``meta`` (e.g. folds, seed) is recorded beside them. Checks the result by reading it back."""
    folder = Path(folder)
    for name, ids in members:
        if isinstance(ids, str):  # would be read as one query id per character
            raise TypeError(f"member {name}: its training query ids must be a collection, not one string {ids!r}")
    body = {"format": FORMAT, "version": 1, **meta,
            "members": [{"model": str(name), "trained_on": sorted(str(q) for q in ids)} for name, ids in members]}
    path = folder / CROSSFIT_FILE
    with atomic_write(path) as fh:
        fh.write(json.dumps(body, indent=1) + "\n")
    read_crossfit(folder)
    return path


@dataclass(frozen=True)
class CrossFitChunk:
    """A chunk prepared for every member: each member's pair positions in the chunk and its prepared inputs,
    and each pair's number of routed members."""

    positions: tuple[np.ndarray, ...]
    prepared: tuple[Any, ...]
    routed: np.ndarray


class CrossFitTeacher(Teacher):
    """A cross-fitted teacher (see the module docstring): the engine gives it query ids with the texts, and each
    pair goes to the members that did not train on its query. Members are loaded with the same settings."""

    kind = "crossfit"
    needs_query_ids = True

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__(config)
        self.plan = read_crossfit(config.model)
        self.members: list[Teacher] = []
        try:
            for path in self.plan.members:
                self.members.append(load_teacher(replace(config, model=str(path), teacher_id=None)))
        except BaseException:
            self.close()
            raise

    @property
    def dtype(self):
        """The members' dtype (they are loaded alike), so that executor workers score in it too."""
        return getattr(self.members[0], "dtype", None) if self.members else None

    def identity(self) -> dict:
        return {"kind": "crossfit", "combination": COMBINATION,
                "members": [{**t.identity(), **extra} for t, extra in zip(self.members, self.plan.identity())]}

    def info(self) -> dict:
        return {**super().info(), "member_info": [t.info() for t in self.members]}

    def prepare(self, queries: Sequence[str], docs: Sequence[str],
                query_ids: Sequence[str] | None = None) -> CrossFitChunk:
        if query_ids is None or len(query_ids) != len(queries):
            raise ValueError("a cross-fitted teacher needs each pair's query id")
        routes = [self.plan.route(str(q)) for q in query_ids]
        positions, prepared = [], []
        for m, member in enumerate(self.members):
            pos = np.asarray([i for i, r in enumerate(routes) if m in r], dtype=np.int64)
            positions.append(pos)
            prepared.append(member.prepare_pairs([queries[i] for i in pos], [docs[i] for i in pos],
                                                 [query_ids[i] for i in pos]) if pos.size else None)
        return CrossFitChunk(tuple(positions), tuple(prepared), np.asarray([len(r) for r in routes]))

    def warm(self, query_ids: Iterable[str] = ()) -> None:
        """The members these queries route to (a member no pair goes to stays unloaded until one does)."""
        routed = {m for q in dict.fromkeys(query_ids) for m in self.plan.route(q)}
        for m in sorted(routed):
            self.members[m].warm()

    def run(self, prepared: CrossFitChunk) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Pairs with one routed member are yielded batch by batch as that member scores them; pairs with several
        (queries no member trained on) once every member has scored them, as the mean."""
        single = prepared.routed == 1
        sums = np.zeros(len(prepared.routed), dtype=np.float64)
        for member, pos, chunk in zip(self.members, prepared.positions, prepared.prepared):
            if chunk is None:
                continue
            for index, scores in member.run(chunk):
                at = pos[index]
                one = single[at]
                if one.any():
                    yield at[one], scores[one]
                sums[at[~one]] += scores[~one]
        several = np.flatnonzero(~single)
        if several.size:
            yield several, sums[several] / prepared.routed[several]

    def close(self) -> None:
        for t in self.members:
            t.close()
        self.members = []
