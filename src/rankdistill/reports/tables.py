"""Result tables: rows = strategy x loss (or system), columns = collection x metric.

The best value of each column is in bold; equivalence-class letters (from the per-collection TOSTs) are
superscripts, so ``0.6712^ab`` reads "in classes a and b". Markdown (``<sup>``) for READMEs and reports,
LaTeX (booktabs, ``\\textbf``, ``$^{ab}$``) for papers. The letters' caveat (equivalence is not transitive)
is printed under each table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rankdistill.stats.equivalence import CAVEAT
from rankdistill.stats.study import StudyReport


@dataclass(frozen=True)
class Cell:
    """One table cell: a mean and the equivalence-class letters of its system in that column."""

    value: float
    letters: str = ""


@dataclass(frozen=True)
class ResultsTable:
    """A results table; ``cells[(row, col)]`` may be absent (shown as a dash)."""

    row_header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    columns: tuple[tuple[str, str], ...]
    cells: dict[tuple[tuple[str, ...], tuple[str, str]], Cell]
    higher_is_better: bool = True
    caption: str = ""

    def best(self, col: tuple[str, str]) -> float | None:
        vals = [c.value for (r, k), c in self.cells.items() if k == col and math.isfinite(c.value)]
        if not vals:
            return None
        return max(vals) if self.higher_is_better else min(vals)


def table_from_studies(studies: Sequence[StudyReport], caption: str = "") -> ResultsTable:
    """One column per (collection, metric) of the studies (one study per metric); cells are the means over
    seeds, letters those of the collection's equivalence classes."""
    if not studies:
        raise ValueError("no study to tabulate")
    entries = [e for s in studies for e in s.entries]
    by_strategy = all(e.strategy is not None and e.loss is not None for e in entries)
    row_of = {e.system: ((e.strategy or "", e.loss or "") if by_strategy else (e.system,)) for e in entries}
    systems = list(dict.fromkeys(s for st in studies for s in st.systems))
    rows = tuple(dict.fromkeys(row_of[s] for s in systems))
    columns: list[tuple[str, str]] = []
    cells: dict[tuple[tuple[str, ...], tuple[str, str]], Cell] = {}
    for st in studies:
        for coll, res in st.collections.items():
            col = (coll, st.metric)
            columns.append(col)
            letters = res.report.classes.letters if res.report.classes is not None else {}
            for s, interval in res.over_seeds.items():
                cells[(row_of[s], col)] = Cell(interval.mean, letters.get(s, ""))
    header = ("strategy", "loss") if by_strategy else ("system",)
    return ResultsTable(header, rows, tuple(dict.fromkeys(columns)), cells, True, caption)


def _fmt(cell: Cell | None, best: float | None, digits: int, bold: tuple[str, str], sup: tuple[str, str],
         missing: str) -> str:
    if cell is None or not math.isfinite(cell.value):
        return missing
    text = f"{cell.value:.{digits}f}"
    if best is not None and round(cell.value, digits) == round(best, digits):
        text = f"{bold[0]}{text}{bold[1]}"
    if cell.letters:
        text += f"{sup[0]}{cell.letters}{sup[1]}"
    return text


def to_markdown(table: ResultsTable, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (best per column in bold, letters as ``<sup>``)."""
    head = [*table.row_header, *(f"{c} {m}" for c, m in table.columns)]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] * len(table.row_header) + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        cells = [_fmt(table.cells.get((row, col)), table.best(col), digits, ("**", "**"), ("<sup>", "</sup>"), "–")
                 for col in table.columns]
        lines.append("| " + " | ".join([*row, *cells]) + " |")
    out = "\n".join(lines) + "\n"
    if table.caption:
        out = f"{table.caption}\n\n{out}"
    if any(c.letters for c in table.cells.values()):
        out += f"\nSuperscript letters: TOST equivalence classes per column; {CAVEAT}.\n"
    return out


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a label in one pass (``_`` -> ``\\_``, ``~`` spelled out, ...)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], text)


def to_latex(table: ResultsTable, digits: int = 4) -> str:
    """A booktabs ``tabular``: collections as spanning headers over their metrics."""
    n_rows = len(table.row_header)
    spec = "l" * n_rows + "r" * len(table.columns)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    groups: list[tuple[str, int]] = []
    for coll, _ in table.columns:
        if groups and groups[-1][0] == coll:
            groups[-1] = (coll, groups[-1][1] + 1)
        else:
            groups.append((coll, 1))
    top = [""] * n_rows + [rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(c)}}}" for c, n in groups]
    lines.append(" & ".join(top) + r" \\")
    start = n_rows + 1
    rules = []
    for _, n in groups:
        rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    lines.append(" ".join(rules))
    lines.append(" & ".join([latex_escape(h) for h in table.row_header]
                            + [latex_escape(m) for _, m in table.columns]) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        cells = [_fmt(table.cells.get((row, col)), table.best(col), digits, (r"\textbf{", "}"), ("$^{", "}$"), "--")
                 for col in table.columns]
        lines.append(" & ".join([latex_escape(r) for r in row] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    out = "\n".join(lines) + "\n"
    if any(c.letters for c in table.cells.values()):
        out += f"% superscripts: TOST equivalence classes per column; {CAVEAT}\n"
    return out


__all__ = ["Cell", "ResultsTable", "latex_escape", "table_from_studies", "to_latex", "to_markdown"]
