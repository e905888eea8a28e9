"""Multiple-testing corrections across the systems compared with one baseline.

- ``holm``: Holm (1979) step-down, controls the family-wise error rate; adjusted
  ``p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` over the sorted p-values;
- ``bh``: Benjamini & Hochberg (1995), controls the false discovery rate; adjusted
  ``p_(i) = min_{j >= i} min(1, m p_(j) / j)``;
- ``none``: the p-values unchanged.

``bh`` is computed by :func:`statsmodels.stats.multitest.multipletests` (``fdr_bh``). ``holm`` is the formula
above in numpy, checked against statsmodels' in the tests: statsmodels' Holm branch runs a full ``gc.collect()``
on every call, about 0.5 s in a process that holds torch and transformers, and a study's report corrects one
family per comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rankdistill.errors import UserInputError

CORRECTIONS: dict[str, str | None] = {"holm": "holm", "bh": "fdr_bh", "none": None}
"""Our name -> statsmodels' method name."""


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values ``max_{j <= i} min(1, (m - j + 1) p_(j))``, in the order given."""
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(m, 0, -1)))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values (same order as given) under ``method`` in ``holm``, ``bh``, ``none``."""
    if method not in CORRECTIONS:
        raise UserInputError(f"unknown correction {method!r}; known: {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be one flat sequence (one family), got shape {p.shape}")
    bad = p[~((p >= 0.0) & (p <= 1.0))]  # NaN is outside too
    if bad.size:
        raise ValueError(f"p-values must lie in [0, 1]; got {float(bad[0])} ({bad.size} outside)")
    if p.size == 0 or CORRECTIONS[method] is None:
        return p.copy()
    if method == "holm":
        return _holm(p)
    from statsmodels.stats.multitest import multipletests  # here: it brings pandas, and holm needs neither

    return multipletests(p, method=CORRECTIONS[method])[1]


__all__ = ["CORRECTIONS", "adjust_pvalues"]
