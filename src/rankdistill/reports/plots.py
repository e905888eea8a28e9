"""Figures of a study, each written as PNG and SVG (text kept as text in the SVG, reproducible bytes).

- :func:`plot_entropy_histograms`: the teacher-entropy distribution of each sampling strategy;
- :func:`plot_diameter_per_strategy`: box plots of the per-query robust diameter per strategy;
- :func:`plot_entropy_vs_gain`: per-query entropy against the per-query effectiveness gain over a baseline,
  with the Spearman rank correlation;
- :func:`plot_tost_forest`: the TOST ``(1 - 2 alpha)`` intervals of each system's difference to the baseline,
  with the equivalence margin drawn;
- :func:`plot_cost_vs_effectiveness`: a cost measure (GPU hours, teacher calls, documents seen) against
  effectiveness, with intervals.

Figures are built on :class:`matplotlib.figure.Figure` objects (no pyplot state, safe in threads and
without a display). Every function returns the written paths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy import stats

from rankdistill.io import atomic_path
from rankdistill.stats.tost import TostResult

FORMATS: tuple[str, ...] = ("png", "svg")

_RC = {"svg.fonttype": "none", "svg.hashsalt": "rankdistill", "font.size": 9, "axes.grid": True,
       "grid.alpha": 0.3}
_VERDICT_COLOURS = {"equivalent": "tab:green", "different": "tab:red", "inconclusive": "tab:gray"}


def save_figure(fig: Figure, out: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` to ``<out>.<fmt>`` for each format, atomically; deterministic metadata."""
    base = Path(out)
    if base.suffix.lower() in {".png", ".svg", ".pdf"}:
        base = base.with_suffix("")
    written = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        metadata = {"Date": None} if fmt in ("svg", "pdf") else {"Software": None}
        with mpl.rc_context(_RC), atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
        written.append(target)
    return written


def _figure(width: float = 5.0, height: float = 3.4) -> tuple[Figure, object]:
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _finite(values: ArrayLike) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def plot_entropy_histograms(entropies: Mapping[str, ArrayLike], out: str | Path, *,
                            xlabel: str = "teacher softmax entropy (nats, T=1)", bins: int = 30,
                            title: str = "Teacher ranking entropy per sampling strategy") -> list[Path]:
    """Overlaid step histograms (density) of per-query entropy, one per strategy."""
    data = {k: _finite(v) for k, v in entropies.items()}
    data = {k: v for k, v in data.items() if v.size}
    if not data:
        raise ValueError("no finite entropy values to plot")
    lo = min(float(v.min()) for v in data.values())
    hi = max(float(v.max()) for v in data.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    with mpl.rc_context(_RC):
        fig, ax = _figure()
        for name, v in data.items():
            ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.4, label=f"{name} (n={v.size})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(title)
        ax.legend(fontsize=7)
    return save_figure(fig, out)


def plot_diameter_per_strategy(diameters: Mapping[str, ArrayLike], out: str | Path, *,
                               ylabel: str = "robust diameter (q95, cosine)",
                               title: str = "Group locality per sampling strategy") -> list[Path]:
    """Box plots of the per-query robust diameter, one box per strategy."""
    names = [k for k, v in diameters.items() if _finite(v).size]
    if not names:
        raise ValueError("no finite diameters to plot")
    with mpl.rc_context(_RC):
        fig, ax = _figure()
        ax.boxplot([_finite(diameters[k]) for k in names], tick_labels=names, showfliers=True)
        ax.set_xlabel("sampling strategy")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    return save_figure(fig, out)


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation of two per-query quantities (scipy.stats.spearmanr)."""

    rho: float
    pvalue: float
    n: int


def plot_entropy_vs_gain(entropy: Mapping[str, float], gain: Mapping[str, float], out: str | Path, *,
                         xlabel: str = "teacher softmax entropy (nats, T=1)",
                         ylabel: str = "per-query gain over baseline", bins: int = 10,
                         title: str = "Entropy vs effectiveness gain") -> tuple[list[Path], Correlation]:
    """Scatter of per-query (entropy, gain) on the queries both have, binned means on top; returns Spearman's rho."""
    qids = sorted(q for q in set(entropy) & set(gain) if math.isfinite(entropy[q]) and math.isfinite(gain[q]))
    if len(qids) < 3:
        raise ValueError(f"need at least 3 queries with both entropy and gain, got {len(qids)}")
    x = np.array([entropy[q] for q in qids])
    y = np.array([gain[q] for q in qids])
    res = stats.spearmanr(x, y)
    corr = Correlation(float(res.statistic), float(res.pvalue), len(qids))
    with mpl.rc_context(_RC):
        fig, ax = _figure()
        ax.scatter(x, y, s=10, alpha=0.5, label="queries")
        edges = np.unique(np.quantile(x, np.linspace(0, 1, min(bins, len(qids)) + 1)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
            centres = [float(np.mean(x[idx == b])) for b in range(edges.size - 1) if np.any(idx == b)]
            means = [float(np.mean(y[idx == b])) for b in range(edges.size - 1) if np.any(idx == b)]
            ax.plot(centres, means, color="tab:red", marker="o", linewidth=1.5, label="binned mean")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} (Spearman rho = {corr.rho:.3f}, n = {corr.n})")
        ax.legend(fontsize=7)
    return save_figure(fig, out), corr


def plot_tost_forest(results: Sequence[tuple[str, TostResult]], out: str | Path, *,
                     xlabel: str = "difference to baseline", title: str = "TOST equivalence") -> list[Path]:
    """Forest plot: one row per system, its mean difference and (1 - 2 alpha) interval, margins dashed."""
    if not results:
        raise ValueError("no TOST results to plot")
    margin = results[0][1].margin
    level = results[0][1].ci_level
    with mpl.rc_context(_RC):
        fig, ax = _figure(5.5, 0.9 + 0.35 * len(results))
        for i, (_name, r) in enumerate(reversed(results)):
            colour = _VERDICT_COLOURS.get(r.verdict, "black")
            ax.errorbar([r.mean_diff], [i], xerr=[[r.mean_diff - r.ci_low], [r.ci_high - r.mean_diff]], fmt="o",
                        color=colour, capsize=3)
        names = [f"{n} ({r.verdict})" for n, r in reversed(results)]
        ax.set_yticks(range(len(results)), names)
        ax.axvline(0.0, color="black", linewidth=0.8)
        for m in (-margin, margin):
            ax.axvline(m, color="tab:blue", linestyle="--", linewidth=1.0)
        ax.set_xlabel(f"{xlabel} ({100 * level:g}% CI; margin ±{margin:g})")
        ax.set_ylabel("system")
        ax.set_title(title)
    return save_figure(fig, out)


@dataclass(frozen=True)
class CostPoint:
    """One system in a cost-vs-effectiveness plot; ``low``/``high`` may be NaN (no interval)."""

    name: str
    cost: float
    value: float
    low: float = math.nan
    high: float = math.nan


def plot_cost_vs_effectiveness(points: Sequence[CostPoint], out: str | Path, *, xlabel: str = "cost",
                               ylabel: str = "effectiveness", log_cost: bool = False,
                               title: str = "Cost vs effectiveness") -> list[Path]:
    """Scatter of cost against effectiveness with intervals, each point labelled; the Pareto front joined."""
    pts = [p for p in points if math.isfinite(p.cost) and math.isfinite(p.value)]
    if not pts:
        raise ValueError("no points with a finite cost and value")
    with mpl.rc_context(_RC):
        fig, ax = _figure()
        for p in pts:
            if math.isfinite(p.low) and math.isfinite(p.high):
                ax.errorbar([p.cost], [p.value], yerr=[[p.value - p.low], [p.high - p.value]], fmt="o", capsize=3,
                            color="tab:blue")
            else:
                ax.plot([p.cost], [p.value], "o", color="tab:blue")
            ax.annotate(p.name, (p.cost, p.value), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front, best = [], -math.inf
        for p in sorted(pts, key=lambda p: (p.cost, -p.value)):
            if p.value > best:
                front.append(p)
                best = p.value
        if len(front) > 1:
            ax.plot([p.cost for p in front], [p.value for p in front], color="tab:orange", linewidth=1,
                    label="Pareto front")
            ax.legend(fontsize=7)
        if log_cost:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    return save_figure(fig, out)


__all__ = [
    "FORMATS",
    "Correlation",
    "CostPoint",
    "plot_cost_vs_effectiveness",
    "plot_diameter_per_strategy",
    "plot_entropy_histograms",
    "plot_entropy_vs_gain",
    "plot_tost_forest",
    "save_figure",
]
