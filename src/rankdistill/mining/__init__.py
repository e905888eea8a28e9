"""Negative mining: one small class per strategy behind one interface, and the logic they share.

>>> from rankdistill.data import load_dataset                                    # doctest: +SKIP
>>> from rankdistill.mining import MiningConfig, MiningContext, Miner           # doctest: +SKIP
>>> ds = load_dataset("scifact", data_dir="../shared/data")                      # doctest: +SKIP
>>> ctx = MiningContext(MiningConfig("bm25", group_size=16), ds, "train")      # doctest: +SKIP
>>> result = Miner(ctx).run()                                                    # doctest: +SKIP

Strategies (``rankdistill.mining.strategies``): ``random``, ``bm25``, ``dense``, ``teacher``, ``ensemble``,
``run``; add one with :func:`register_strategy`. Import and export of the paper's triples + teacher format
is in :mod:`rankdistill.mining.paper`.
"""

from rankdistill.mining.base import (
    STRATEGIES,
    MiningConfig,
    MiningQuery,
    Strategy,
    get_strategy,
    register_strategy,
)
from rankdistill.mining.context import MiningContext
from rankdistill.mining.miner import Miner, MiningResult, mining_queries

__all__ = [
    "STRATEGIES", "Miner", "MiningConfig", "MiningContext", "MiningQuery", "MiningResult", "Strategy",
    "get_strategy", "mining_queries", "register_strategy",
]
