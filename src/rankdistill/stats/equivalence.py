"""Equivalence classes across many systems: the paper's letters, computed from pairwise paired TOSTs.

Every pair of systems is tested with :func:`~rankdistill.stats.tost.paired_tost` at the same margin and
alpha. The systems and the "equivalent" verdicts form a graph; each *maximal clique* of that graph (a largest
set of systems that are all pairwise equivalent; found by :func:`networkx.find_cliques`, Bron & Kerbosch
1973) becomes one class and gets a letter, in the order of the best mean among its members (``a`` holds the
best system). A system's label is the letters of every class it belongs to (a compact letter display,
Piepho 2004). Systems sharing a letter are pairwise equivalent.

Equivalence is **not transitive**: A ~ B and B ~ C does not imply A ~ C, so a system may carry two letters
(``ab``) while the systems with ``a`` only and ``b`` only are not equivalent to each other. The caveat is part
of every output (:data:`CAVEAT`). The pairwise tests are not corrected for multiplicity.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from rankdistill.stats.tost import TostResult, paired_tost

CAVEAT = ("equivalence is not transitive: systems sharing a letter are pairwise equivalent within the margin, "
          "but A~B and B~C does not imply A~C; pairwise TOSTs are not corrected for multiplicity")


def letter(i: int) -> str:
    """``a`` .. ``z``, then ``aa``, ``ab``, ...: the i-th class label (0-based)."""
    letters = string.ascii_lowercase
    out = ""
    i += 1
    while i > 0:
        i, r = divmod(i - 1, 26)
        out = letters[r] + out
    return out


@dataclass(frozen=True)
class EquivalenceClasses:
    """Letters per system (systems ordered by mean, best first), the classes and the pairwise tests."""

    systems: tuple[str, ...]
    means: dict[str, float]
    letters: dict[str, str]
    classes: tuple[tuple[str, ...], ...]
    pairwise: dict[tuple[str, str], TostResult]
    margin: float
    alpha: float
    caveat: str = CAVEAT


def letter_display(names: Sequence[str], means: Mapping[str, float],
                   equivalent_pairs: set[frozenset[str]]) -> tuple[dict[str, str], tuple[tuple[str, ...], ...]]:
    """Compact letter display from the set of equivalent pairs; returns ``(letters, classes)``."""
    order = sorted(names, key=lambda s: (-means[s], s))
    rank = {s: i for i, s in enumerate(order)}
    graph = nx.Graph()
    graph.add_nodes_from(order)
    graph.add_edges_from(tuple(p) for p in equivalent_pairs)
    cliques = [tuple(sorted(c, key=rank.__getitem__)) for c in nx.find_cliques(graph)]
    cliques.sort(key=lambda c: [rank[s] for s in c])
    labels = {s: "" for s in order}
    for i, clique in enumerate(cliques):
        for s in clique:
            labels[s] += letter(i)
    return labels, tuple(cliques)


def equivalence_classes(values: Mapping[str, np.ndarray], margin: float, alpha: float = 0.05
                        ) -> EquivalenceClasses:
    """Pairwise paired TOSTs over aligned per-query values ``{system: array}``, then the letter display."""
    names = list(values)
    if len(names) < 2:
        raise ValueError("equivalence classes need at least two systems")
    means = {s: float(np.mean(values[s])) for s in names}
    pairwise: dict[tuple[str, str], TostResult] = {}
    equivalent: set[frozenset[str]] = set()
    for a, b in itertools.combinations(names, 2):
        res = paired_tost(values[a], values[b], margin, alpha)
        pairwise[(a, b)] = res
        if res.verdict == "equivalent":
            equivalent.add(frozenset((a, b)))
    labels, classes = letter_display(names, means, equivalent)
    order = tuple(sorted(names, key=lambda s: (-means[s], s)))
    return EquivalenceClasses(order, means, labels, classes, pairwise, margin, alpha)


__all__ = ["CAVEAT", "EquivalenceClasses", "equivalence_classes", "letter", "letter_display"]
