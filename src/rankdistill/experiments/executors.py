"""Executors for the grid's cells: in-process (default), a pool of local processes, or a Ray cluster.

Cells are pure functions of their arguments that write artifacts to a shared file system, so every executor
gives identical results; they only change where and when each cell runs. ``processes`` runs ``workers`` cells
at once on this machine (fresh interpreters, started with ``spawn`` so that CUDA is safe), all sharing its
GPU: a MiniLM-sized student keeps only a fraction of a large GPU busy, and the per-cell fixed costs (loading
the model, tokenising, evaluating) overlap. Each Ray task asks for the GPUs (``executor.gpus_per_cell``) and
CPUs it needs.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)


def feeder(tasks: Sequence[tuple], launch: Callable[[int, tuple], None]) -> Callable[[int], None]:
    """``submit(n)`` launches the next ``n`` tasks (index and arguments); a task's arguments are taken from
    ``tasks`` only then, so a lazy sequence is built as the executor goes, never all at once."""
    queued = iter(enumerate(tasks))

    def submit(n: int) -> None:
        for i, args in itertools.islice(queued, n):
            launch(i, args)

    return submit


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


def _init_worker(threads: int) -> None:
    """Per worker process: share the CPU cores out, and log like the parent (warnings and up)."""
    import torch

    from rankdistill.cli import follow_root_level

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    follow_root_level()


class ProcessExecutor:
    """Runs up to ``workers`` tasks at once in spawned processes of this machine (sharing its GPU)."""

    name = "processes"

    in_flight_per_worker = 2
    """Tasks submitted per worker at a time. A task's arguments are taken from ``tasks`` only when it is
    submitted, so a lazy sequence (the chunks of texts when scoring) is never built in memory all at once."""

    def __init__(self, workers: int = 4) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = max(1, workers)
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=(threads,))

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple], on_done: Callable[[int, Any], None] | None = None
            ) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        futures: dict[Any, int] = {}
        results: dict[int, Any] = {}
        submit = feeder(tasks, lambda i, args: futures.__setitem__(self._pool.submit(fn, *args), i))
        submit(self.in_flight_per_worker * self.workers)
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.__getitem__):
                    i = futures.pop(fut)
                    results[i] = fut.result()
                    if on_done:
                        on_done(i, results[i])
                submit(len(done))
        except BaseException:
            self.terminate()
            raise
        return [results[i] for i in range(len(tasks))]

    def terminate(self) -> None:
        """Stop the workers now (a failed cell, or the run being stopped): running cells leave only their
        ``.partial`` folders, which the next run starts afresh.

        The pending futures are cancelled by the pool's own manager thread (``cancel_futures``), never from
        this thread: a `timeout` or Ctrl-C also kills the workers, and the manager thread then fails every
        pending future, which on Python 3.11 raises ``InvalidStateError`` for one this thread had cancelled
        in the meantime.
        """
        processes = list((getattr(self._pool, "_processes", None) or {}).values())  # shutdown() forgets them
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs tasks as Ray remote functions; ``address=None`` starts (or joins) a local instance."""

    name = "ray"

    max_in_flight = 256
    """Tasks submitted at a time: the rest wait here, so their arguments (chunks of texts when scoring) do not
    all sit in the object store at once."""

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
        index: dict[Any, int] = {}
        results: dict[int, Any] = {}
        pending: list = []

        def launch(i: int, args: tuple) -> None:
            ref = remote.remote(*args)
            index[ref] = i
            pending.append(ref)

        submit = feeder(tasks, launch)  # at most max_in_flight tasks' arguments in the object store at once
        submit(self.max_in_flight)
        try:
            while pending:
                ready, rest = self._ray.wait(pending, num_returns=1)
                pending[:] = rest
                for ref in ready:
                    i = index.pop(ref)
                    results[i] = self._ray.get(ref)
                    if on_done:
                        on_done(i, results[i])
                submit(len(ready))
        except BaseException as e:
            for ref in pending:
                self._ray.cancel(ref, force=True)
            cause = getattr(e, "cause", None)  # a RayTaskError wraps what the task raised
            if isinstance(e, self._ray.exceptions.RayTaskError) and isinstance(cause, Exception) \
                    and type(cause).__name__ in ("UserInputError", "StageFailed"):
                raise cause from None  # the one-line error, not Ray's traceback of it
            raise
        return [results[i] for i in range(len(tasks))]

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(kind: str, address: str | None = None, gpus_per_cell: float = 0.0, cpus_per_cell: float = 1.0,
                  workers: int = 4):
    if kind == "ray":
        return RayExecutor(address, gpus_per_cell, cpus_per_cell)
    if kind == "processes":
        return ProcessExecutor(workers)
    return LocalExecutor()
