"""Ranking losses as pure functions over student and teacher scores ``[B, G]`` (positive at column 0).

``lce`` and ``infonce`` need no teacher; ``margin_mse``, ``ranknet``, ``kl`` and ``listnet`` distil teacher
scores. :data:`LOSSES` is a plain dict filled by :func:`register_loss`; :func:`make_loss` binds options.
"""

from rankdistill.losses.listwise import infonce, kl, lce, listnet
from rankdistill.losses.pairwise import MARGIN_PAIRS, RANKNET_TARGETS, RANKNET_TIES, margin_mse, ranknet
from rankdistill.losses.registry import LOSSES, LossSpec, get_loss, make_loss, register_loss

__all__ = [
    "LOSSES",
    "MARGIN_PAIRS",
    "RANKNET_TARGETS",
    "RANKNET_TIES",
    "LossSpec",
    "get_loss",
    "infonce",
    "kl",
    "lce",
    "listnet",
    "make_loss",
    "margin_mse",
    "ranknet",
    "register_loss",
]
