"""Reports of a study: Markdown/LaTeX result tables and matplotlib figures (PNG and SVG)."""

from rankdistill.reports.plots import (
    CostPoint,
    plot_cost_vs_effectiveness,
    plot_diameter_per_strategy,
    plot_entropy_histograms,
    plot_entropy_vs_gain,
    plot_tost_forest,
    save_figure,
)
from rankdistill.reports.tables import Cell, ResultsTable, table_from_studies, to_latex, to_markdown

__all__ = [
    "Cell",
    "CostPoint",
    "ResultsTable",
    "plot_cost_vs_effectiveness",
    "plot_diameter_per_strategy",
    "plot_entropy_histograms",
    "plot_entropy_vs_gain",
    "plot_tost_forest",
    "save_figure",
    "table_from_studies",
    "to_latex",
    "to_markdown",
]
