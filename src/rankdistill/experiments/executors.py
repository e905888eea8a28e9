"""Executors for the grid's cells: in-process (default) or fanned out over a Ray cluster.

Cells are pure functions of their arguments that write artifacts to a shared file system, so both executors
give identical results; Ray only changes where and when each cell runs. Each Ray task asks for the GPUs
(``executor.gpus_per_cell``) and CPUs it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)


class LocalExecutor:
    """Runs tasks one after another in this process."""

    name = "local"

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], on_done: Callable[[int, Any], None] | None = None
            ) -> list[Any]:
        out = []
        for i, args in enumerate(tasks):
            result = fn(*args)
            out.append(result)
            if on_done:
                on_done(i, result)
        return out

    def close(self) -> None:
        pass


class RayExecutor:
    """Runs tasks as Ray remote functions; ``address=None`` starts (or joins) a local instance."""

    name = "ray"

    def __init__(self, address: str | None = None, num_gpus: float = 0.0, num_cpus: float = 1.0) -> None:
        import ray

        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                kwargs["address"] = address
            ray.init(**kwargs)
            self._started = True
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], on_done: Callable[[int, Any], None] | None = None
            ) -> list[Any]:
        remote = self._ray.remote(num_gpus=self.num_gpus, num_cpus=self.num_cpus, max_retries=0)(fn)
        refs = [remote.remote(*args) for args in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        results: dict[int, Any] = {}
        pending = list(refs)
        while pending:
            ready, pending = self._ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index[ref]
                results[i] = self._ray.get(ref)
                if on_done:
                    on_done(i, results[i])
        return [results[i] for i in range(len(tasks))]

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(kind: str, address: str | None = None, gpus_per_cell: float = 0.0, cpus_per_cell: float = 1.0):
    if kind == "ray":
        return RayExecutor(address, gpus_per_cell, cpus_per_cell)
    return LocalExecutor()
