"""The mining interface: a config, the queries to mine, and one small class per strategy behind a registry.

A strategy only proposes candidates; everything the strategies share (rank window, exclusions, the
false-negative guard, sampling, top-up, seeding, counts) is done once by :class:`~rankdistill.mining.miner.Miner`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from rankdistill.errors import UserInputError, check_field_types, unused_flags

SAMPLE_MODES = ("random", "top")
SHORT_POLICIES = ("topup", "skip")
FUSIONS = ("filter", "rrf")
MODEL_STRATEGIES = ("dense", "ensemble")
"""Strategies whose first stage may run a model (a dense retriever): only their fanned-out mining tasks ask
for a GPU."""


@dataclass(frozen=True)
class MiningConfig:
    """Resolved settings of one mining run (saved in the sidecar JSON).

    Attributes:
        strategy: registered strategy name.
        group_size: documents per training group (1 positive + ``group_size - 1`` negatives).
        pool_size: negatives kept per query (default ``2 * group_size``); training draws from this pool.
        depth: how many results a first stage retrieves per query (default 200).
        min_rank, max_rank: rank window of the strategy's ranking (1-based, inclusive; default 1..depth, and
            1..100 for ``teacher``: the teacher's top-m).
        sample: ``random`` (uniform over the window) or ``top`` (best first).
        seed: seed of every random choice (per query, see :mod:`rankdistill.mining.seeding`).
        on_short: a query with fewer than ``pool_size`` candidates (:meth:`Strategy.fill_target`; the
            ensemble's filter fusion: ``group_size - 1``) is topped up with random documents (``topup``) or left
            out (``skip``).
        fn_margin: false-negative guard: drop candidates the teacher scores above (lowest positive - margin);
            ``None`` = off.
        min_relevance: qrels level of a positive (default: the split's ``rel_threshold``).
        max_queries: mine only the first N queries of the split (in query-file order).
        candidates: TREC run for ``--strategy run``.
        systems: TREC runs for ``ensemble``; retrievers: named first stages for ``ensemble`` (bm25, dense).
        fusion: ``filter`` (the sentence-transformers ensemble rule) or ``rrf`` (reciprocal-rank fusion).
        ensemble_n, ensemble_margin: negatives per system and teacher margin of the ensemble rule.
        rrf_k: RRF constant.
        encoder: bi-encoder for ``dense`` (default: the bundled all-MiniLM-L6-v2); similarity ``dot``/``cosine``;
            encoder_max_length: its token limit (default: the model's own).
    """

    strategy: str
    group_size: int
    pool_size: int | None = None
    depth: int = 200
    min_rank: int = 1
    max_rank: int | None = None
    sample: str = "random"
    seed: int = 0
    on_short: str = "topup"
    fn_margin: float | None = None
    min_relevance: int | None = None
    max_queries: int | None = None
    candidates: str | None = None
    systems: tuple[str, ...] = ()
    retrievers: tuple[str, ...] = ()
    fusion: str = "filter"
    ensemble_n: int = 10
    ensemble_margin: float = 0.5
    rrf_k: int = 60
    encoder: str | None = None
    encoder_batch_size: int = 64
    encoder_max_length: int | None = None
    similarity: str = "dot"
    embedding_cache: str | None = None

    @property
    def pool(self) -> int:
        return self.pool_size if self.pool_size is not None else 2 * self.group_size

    def validate(self) -> None:
        """Raise :class:`UserInputError` for inconsistent settings, before any compute."""
        check_field_types(self)
        if self.group_size < 2:
            raise UserInputError(f"--group-size must be at least 2 (1 positive + negatives), got {self.group_size}")
        if self.pool < self.group_size - 1:
            raise UserInputError(f"--pool {self.pool} is smaller than group size - 1 = {self.group_size - 1}",
                                 fix=f"use --pool {self.group_size - 1} or more (default 2 x group size)")
        if self.depth < 1:
            raise UserInputError(f"--depth must be at least 1, got {self.depth}")
        if self.min_rank < 1:
            raise UserInputError(f"--min-rank must be at least 1, got {self.min_rank}")
        if self.max_rank is not None and self.max_rank < self.min_rank:
            raise UserInputError(f"--max-rank {self.max_rank} is below --min-rank {self.min_rank}")
        if self.sample not in SAMPLE_MODES:
            raise UserInputError(f"unknown --sample {self.sample!r}", fix="use random or top")
        if self.on_short not in SHORT_POLICIES:
            raise UserInputError(f"unknown --on-short {self.on_short!r}", fix="use topup or skip")
        if self.fusion not in FUSIONS:
            raise UserInputError(f"unknown --fusion {self.fusion!r}", fix="use filter or rrf")
        if self.ensemble_n < 1:
            raise UserInputError(f"--ensemble-n must be at least 1, got {self.ensemble_n}")
        if self.max_queries is not None and self.max_queries < 1:
            raise UserInputError(f"--max-queries must be at least 1, got {self.max_queries}")
        if self.rrf_k < 0:
            raise UserInputError(f"--rrf-k must be non-negative, got {self.rrf_k}")
        given = [flag for flag, value in (("--systems", self.systems), ("--retrievers", self.retrievers)) if value]
        if given and self.strategy != "ensemble":  # were silently ignored
            raise unused_flags(given, f"only used by --strategy ensemble, not {self.strategy}",
                               "use --strategy ensemble")
        if self.min_relevance is not None and self.min_relevance < 1:
            raise UserInputError(f"--min-relevance must be at least 1, got {self.min_relevance}",
                                 fix="grade 0 means judged not relevant; give --min-relevance 1 or more")
        try:
            strategy = get_strategy(self.strategy)(SimpleNamespace(config=self))
        except AttributeError:  # a strategy whose constructor needs the full context: the Miner checks it
            return
        self.check_window(strategy)

    def check_window(self, strategy: Strategy) -> None:
        """Refuse a rank window or ``--sample top`` for a strategy whose candidates are not a ranking (they
        would be ignored, or take an arbitrary order for a ranking), and a ``--min-rank`` past the last rank of
        ``strategy``'s default window (``--depth``; 100 for ``teacher``), which would leave every query without
        candidates. An explicit ``--max-rank`` below ``--min-rank`` is refused by :meth:`validate`."""
        if not strategy.ranked:
            flags = (("--min-rank", self.min_rank != 1), ("--max-rank", self.max_rank is not None),
                     ("--sample top", self.sample == "top"))
            given = [flag for flag, on in flags if on]
            if given:
                ensemble = self.strategy == "ensemble"
                what = f"--strategy {self.strategy}" + (" with --fusion filter" if ensemble else "")
                raise unused_flags(given, f"to a ranking, and {what} gives an unordered candidate set (sampled "
                                   "uniformly)", "use --fusion rrf" if ensemble else None, verb=("applies", "apply"))
            return
        if self.max_rank is not None:
            return
        end = strategy.default_max_rank()
        if end is not None and self.min_rank > end:
            from_depth = type(strategy).default_max_rank is Strategy.default_max_rank
            source = "--depth" if from_depth else f"the default --max-rank of --strategy {self.strategy}"
            flag = "--depth" if from_depth else "--max-rank"
            raise UserInputError(f"--min-rank {self.min_rank} is past the last rank of the window, {end} ({source}), "
                                 "so no candidate would be left",
                                 fix=f"use --min-rank {end} or less, or a larger {flag}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pool_size"] = self.pool
        d["systems"] = list(self.systems)
        d["retrievers"] = list(self.retrievers)
        return d


@dataclass(frozen=True)
class MiningQuery:
    """A query to mine: its text, judged positives, and every judged relevant document (never a negative)."""

    query_id: str
    text: str
    positives: tuple[str, ...]
    excluded: frozenset[str]


class Strategy(abc.ABC):
    """Proposes candidate negatives. ``ranked`` strategies return rankings (window and ``--sample top`` apply);
    others return an unordered candidate set that is sampled uniformly."""

    name: ClassVar[str] = ""
    ranked: bool = True
    """Candidates are a ranking (window and ``--sample top`` apply); may be set per instance."""
    needs_teacher: bool = False
    """The strategy needs ``context.teacher``; may be set per instance."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.config: MiningConfig = context.config
        self.counts: dict[str, int] = {}

    @abc.abstractmethod
    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        """Candidate doc ids per query id (best first when ``ranked``); missing queries have none."""

    def default_max_rank(self) -> int | None:
        """The end of the rank window when ``--max-rank`` is not given."""
        return self.config.depth

    def fill_target(self) -> int:
        """The size below which a query's pool is short: topped up with random documents to it (``--on-short
        topup``) or left out (``skip``). The pool size, unless a strategy says otherwise."""
        return self.config.pool

    def settings(self) -> dict:
        """Strategy-specific resolved settings for the sidecar."""
        return {}


STRATEGIES: dict[str, type[Strategy]] = {}
"""The registry: strategy name -> class."""


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator adding a strategy to :data:`STRATEGIES` under ``name``."""

    def wrap(cls: type[Strategy]) -> type[Strategy]:
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ValueError(f"strategy {name!r} registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``; an unknown name lists the known ones."""
    from rankdistill.mining import strategies  # noqa: F401  (registers the built-in strategies)

    if name not in STRATEGIES:
        raise UserInputError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]
