"""Deterministic kernels for a training run (``train --deterministic``, a study's ``student.deterministic``).

On a CPU a seeded run is repeatable byte for byte. On a GPU it is not by default: some backward passes
accumulate with atomic additions, whose order varies from run to run, so two runs of one seed drift apart (two
GPU runs of the SciFact study's seed 0 differed by 0.0043 nDCG@10 on average, a quarter of the cross-encoder
students' values by more than the 0.01 equivalence margin; docs/results.md). This asks torch for deterministic
kernels for the length of a run, as Lightning's ``Trainer(deterministic=True)`` and transformers'
``enable_full_determinism`` do:

- ``torch.use_deterministic_algorithms(True, warn_only=True)``: operations that have a deterministic
  implementation use it; those that have none run as before and are recorded by name (the run's summary lists
  them under ``nondeterministic_ops``, so an empty list is the evidence that the run can be repeated), rather
  than failing a long run;
- cuDNN's autotuner off and its deterministic algorithms on;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS's fixed workspace, which torch requires for deterministic GEMMs on
  CUDA 10.2 and later) unless the environment holds one of the two values torch accepts (:func:`cublas_workspace`).

A resumed run's list adds the operations named before its checkpoint.

Everything is put back as it was when the run ends. Determinism makes a seed's run repeatable; it does not make
a finding steadier across seeds, which vary at least as much.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

NONDETERMINISTIC = " does not have a deterministic implementation"
"""The text of torch's alert for an operation without a deterministic implementation (``warn_only=True``)."""

CUBLAS_ALERT = "because it uses CuBLAS"
"""The text of torch's alert for a GEMM under a ``CUBLAS_WORKSPACE_CONFIG`` it does not accept."""

CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")
"""The ``CUBLAS_WORKSPACE_CONFIG`` values under which torch accepts cuBLAS as deterministic."""


def alert_name(message: str) -> str | None:
    """The operation a torch determinism alert names, or None for another warning."""
    if NONDETERMINISTIC in message:
        return message.split(NONDETERMINISTIC)[0].strip()
    if CUBLAS_ALERT in message:
        return "cuBLAS (CUBLAS_WORKSPACE_CONFIG)"
    return None


@contextlib.contextmanager
def cublas_workspace() -> Iterator[None]:
    """``CUBLAS_WORKSPACE_CONFIG`` set to a value torch accepts as deterministic (``:4096:8``) unless it holds one
    already, and put back after. torch may read it once per process, when cuBLAS is first used, so a process
    that will train deterministically sets it before its first GPU work (``rankdistill run`` does, for a study
    with ``student.deterministic``); :func:`deterministic_kernels` sets it too, for a process that starts there."""
    before = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if before in CUBLAS_DETERMINISTIC:
        yield
        return
    if before is not None:
        logger.info("CUBLAS_WORKSPACE_CONFIG=%s is not one of %s, which torch needs for deterministic GEMMs: "
                    "using %s for this run", before, " or ".join(CUBLAS_DETERMINISTIC), CUBLAS_WORKSPACE)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = before


@dataclass
class KernelAlerts:
    """The operations that ran without a deterministic kernel while deterministic ones were asked for."""

    found: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        if name not in self.found:
            self.found.append(name)

    def names(self) -> list[str]:
        """The operations named so far, in the order they first ran."""
        return list(self.found)


@contextlib.contextmanager
def deterministic_kernels(on: bool = True) -> Iterator[KernelAlerts]:
    """Within the block, torch uses deterministic kernels where it has them; yields the :class:`KernelAlerts`
    naming the operations that ran without one (none when ``on`` is false).

    torch's alerts are taken out of the warnings shown, each operation named once; every other warning goes
    through the filters and the handler in place, as it would without the block."""
    alerts = KernelAlerts()
    if not on:
        yield alerts
        return
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        with cublas_workspace(), warnings.catch_warnings():  # the filters and showwarning are put back after
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                name = alert_name(str(message))
                if name is None:
                    shown(message, category, filename, lineno, file, line)
                else:
                    alerts.add(name)

            # torch raises an alert at every call of the operation: each reaches the handler above (an "error"
            # filter, e.g. -W error, would otherwise stop the run on it), and no other warning is touched
            warnings.filterwarnings("always", message=".*" + re.escape(NONDETERMINISTIC))
            warnings.filterwarnings("always", message=".*" + re.escape(CUBLAS_ALERT))
            warnings.showwarning = show
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
            yield alerts
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        names = alerts.names()
        if names:
            logger.warning("deterministic kernels were asked for, but %d operation(s) have none and ran as "
                           "before, so this run may not repeat exactly: %s", len(names), ", ".join(names))


__all__ = ["CUBLAS_DETERMINISTIC", "CUBLAS_WORKSPACE", "NONDETERMINISTIC", "KernelAlerts", "alert_name",
           "cublas_workspace", "deterministic_kernels"]
