"""The groups file: one JSON line per training query with its positives and a pool of negatives.

``{"query_id": "...", "positive_ids": ["..."], "negative_ids": ["...", ...], "strategy": "bm25", "seed": 0}``

The negative pool may be larger than the group size; training draws ``group_size - 1`` negatives per step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rankdistill.errors import UserInputError
from rankdistill.io import atomic_write, iter_json_objects, json_id


@dataclass(frozen=True)
class Group:
    """One training query: its judged positives and a pool of negatives."""

    query_id: str
    positive_ids: list[str]
    negative_ids: list[str]
    strategy: str = "unknown"
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("positive_ids", "negative_ids"):
            if isinstance(getattr(self, name), str):  # would be read as one document id per character
                raise TypeError(f"Group.{name} must be a list of document ids, not one string: pass "
                                f"[{getattr(self, name)!r}]")

    def to_json(self) -> str:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return json.dumps(d, ensure_ascii=False, separators=(", ", ": "))


_REQUIRED = ("query_id", "positive_ids", "negative_ids")


def iter_groups(path: str | Path, unique: bool = False) -> Iterator[tuple[int, Group]]:
    """Yield ``(line_number, Group)`` from a groups JSONL file; malformed lines raise with file:line, and with
    ``unique`` so does a second group of a query (for readers that take one group per query: training,
    diagnostics, selections, the paper's export)."""
    seen: dict[str, int] = {}
    for n, obj in iter_json_objects(path):
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise UserInputError(f"missing key(s) {', '.join(missing)}", path=path, line=n,
                                 fix="a group needs query_id, positive_ids and negative_ids")
        pos, neg = obj.pop("positive_ids"), obj.pop("negative_ids")
        if not isinstance(pos, list) or not isinstance(neg, list):
            raise UserInputError("positive_ids and negative_ids must be lists", path=path, line=n,
                                 fix='write them as JSON lists, e.g. "positive_ids": ["d1"]')
        qid = json_id(obj.pop("query_id"), "query_id", path, n)
        if unique:
            if qid in seen:
                raise UserInputError(f"query {qid!r} has a second group (first on line {seen[qid]})", path=path,
                                     line=n, fix="keep one group per query")
            seen[qid] = n
        strategy = str(obj.pop("strategy", "unknown"))
        seed = obj.pop("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserInputError(f"seed must be an integer, found {json.dumps(seed)}", path=path, line=n,
                                 fix='use an integer such as "seed": 0, or leave the key out')
        yield n, Group(qid, [json_id(x, "positive_ids", path, n) for x in pos],
                       [json_id(x, "negative_ids", path, n) for x in neg], strategy, seed, obj)


def read_groups(path: str | Path, unique: bool = False) -> list[Group]:
    """Read a whole groups file (see :func:`iter_groups`)."""
    return [g for _, g in iter_groups(path, unique)]


def write_groups(groups: Iterable[Group], path: str | Path) -> int:
    """Write groups atomically as JSONL; returns the number written."""
    n = 0
    with atomic_write(path) as fh:
        for g in groups:
            fh.write(g.to_json() + "\n")
            n += 1
    return n
