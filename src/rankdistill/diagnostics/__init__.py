"""Diagnostics of training groups: teacher ranking entropy, score spread, kappa, locality, selections.

Pure maths in :mod:`.entropy`, :mod:`.kappa` and :mod:`.locality`; query selections by a statistic in
:mod:`.selections`; the per-query ``diagnose`` job (parquet + sidecar) in :mod:`.job`.
"""

from rankdistill.diagnostics.entropy import (
    ScoreSpread,
    UndefinedStatistic,
    binary_entropy_bits,
    normalized_softmax_entropy,
    pairwise_entropy,
    positive_rank,
    score_spread,
    softmax_entropy,
    softmax_probabilities,
)
from rankdistill.diagnostics.kappa import kappa, log_kappa
from rankdistill.diagnostics.locality import (
    mean_distance,
    pairwise_distances,
    robust_diameter,
    summary_quantiles,
)
from rankdistill.diagnostics.selections import (
    SELECTIONS,
    QuantileBand,
    get_selection,
    keep_quantile_band,
    select_band,
    select_groups,
)

__all__ = [
    "SELECTIONS",
    "QuantileBand",
    "ScoreSpread",
    "UndefinedStatistic",
    "binary_entropy_bits",
    "get_selection",
    "kappa",
    "keep_quantile_band",
    "log_kappa",
    "mean_distance",
    "normalized_softmax_entropy",
    "pairwise_distances",
    "pairwise_entropy",
    "positive_rank",
    "robust_diameter",
    "score_spread",
    "select_band",
    "select_groups",
    "softmax_entropy",
    "softmax_probabilities",
    "summary_quantiles",
]

_LAZY = {"DiagnoseConfig": "job", "DiagnoseResult": "job", "diagnose_groups": "job", "run_diagnose": "job"}
__all__ += sorted(_LAZY)

from rankdistill._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
