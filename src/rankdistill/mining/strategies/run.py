"""``run``: negatives from any TREC run (``--candidates FILE``), so users plug in their own retriever."""

from __future__ import annotations

from collections.abc import Sequence

from rankdistill.errors import UserInputError
from rankdistill.mining.base import MiningQuery, Strategy, register_strategy
from rankdistill.mining.context import rankings


@register_strategy("run")
class RunStrategy(Strategy):
    """The run's ranking of each query, cut at ``depth``; queries the run lacks have no candidates."""

    def __init__(self, context) -> None:
        super().__init__(context)
        if not self.config.candidates:
            raise UserInputError("--strategy run needs --candidates FILE (a TREC run)")

    def candidates(self, queries: Sequence[MiningQuery]) -> dict[str, list[str]]:
        run = self.context.run_file(self.config.candidates, "--candidates")
        wanted = {q.query_id for q in queries}
        missing = len(wanted - set(run))
        self.counts["queries_missing_from_run"] = self.counts.get("queries_missing_from_run", 0) + missing
        return rankings({q: docs for q, docs in run.items() if q in wanted}, self.config.depth)

    def settings(self) -> dict:
        return {"first_stage": "run", "candidates": str(self.config.candidates)}
