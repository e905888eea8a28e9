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
  CUDA 10.2 and later) unless the environment sets it already.

Everything is put back as it was when the run ends. Determinism makes a seed's run repeatable; it does not make
a finding steadier across seeds, which vary at least as much.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

NONDETERMINISTIC = " does not have a deterministic implementation"
"""The text of torch's alert for an operation without a deterministic implementation (``warn_only=True``)."""

CUBLAS_WORKSPACE = ":4096:8"


@dataclass
class KernelAlerts:
    """The warnings caught while deterministic kernels were asked for; :meth:`names` reads torch's alerts."""

    caught: list[warnings.WarningMessage] = field(default_factory=list)

    def names(self) -> list[str]:
        """The operations that ran without a deterministic implementation so far, in the order they first ran."""
        out: list[str] = []
        for w in self.caught:
            text = str(w.message)
            if NONDETERMINISTIC in text:
                name = text.split(NONDETERMINISTIC)[0].strip()
                if name not in out:
                    out.append(name)
        return out


@contextlib.contextmanager
def deterministic_kernels(on: bool = True) -> Iterator[KernelAlerts]:
    """Within the block, torch uses deterministic kernels where it has them; yields the
    :class:`KernelAlerts` that names the operations that ran without one (none when ``on`` is false). Other
    warnings raised in the block are shown when it ends."""
    alerts = KernelAlerts()
    if not on:
        yield alerts
        return
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    set_env = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            alerts.caught = caught
            yield alerts
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if set_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        for w in alerts.caught:  # the other warnings, shown once the block is over as the filters outside decide
            if NONDETERMINISTIC not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        names = alerts.names()
        if names:
            logger.warning("deterministic kernels were asked for, but %d operation(s) have none and ran as "
                           "before, so this run may not repeat exactly: %s", len(names), ", ".join(names))


__all__ = ["CUBLAS_WORKSPACE", "NONDETERMINISTIC", "KernelAlerts", "deterministic_kernels"]
