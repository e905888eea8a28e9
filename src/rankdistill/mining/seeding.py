"""Deterministic per-query random streams, independent of Python's salted ``hash()`` and of query order.

``query_rng(seed, query_id, stream)`` seeds a NumPy ``PCG64`` generator with the first 128 bits of
``SHA-256("{seed}\\x1f{query_id}\\x1f{stream}")``. The same inputs give the same draws on any machine and
in any process, a query's draws do not depend on which other queries are mined, and separate ``stream``
names (``"candidates"``, ``"sample"``, ``"topup"``) keep the uses from sharing random numbers.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, query_id: str, stream: str) -> int:
    """A 128-bit integer seed for ``(seed, query_id, stream)``."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{query_id}\x1f{stream}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def query_rng(seed: int, query_id: str, stream: str) -> np.random.Generator:
    """The random generator of one query and one use."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, query_id, stream)))
