"""Fair shares of one device among the jobs that used it at the same time.

A study's process pool runs several cells at once on one GPU, so a cell's wall seconds over-count the GPU
time it had: with six cells side by side, each second of the GPU appears six times. The share of job
:math:`i`, busy over :math:`[s_i, e_i)`, is its wall time divided at each moment by the number of jobs busy
then:

.. math::

    \\mathrm{share}_i = \\int_{s_i}^{e_i} \\frac{dt}{n(t)}, \\qquad n(t) = |\\{\\, j : s_j \\le t < e_j \\,\\}|.

The shares add up to the measure of the union of the intervals, the time the device had work, and a job
that ran alone keeps its wall time. This assumes the device time-slices evenly between the processes that
have work (what a GPU does for processes without MPS); a job that waits on its CPU part more than the others
is credited more than it used. This is the processor-sharing model of queueing theory (Kleinrock,
*Queueing Systems*, vol. 2, 1976, ch. 4).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def _segments(intervals: Sequence[tuple[float, float]]) -> Iterator[tuple[float, frozenset[int]]]:
    """Sweep the intervals in time order: each stretch of time between two events, as (its length, the
    indices of the intervals busy over it). An interval with ``end <= start`` is never busy; one that ends
    exactly when another starts does not overlap it."""
    events: list[tuple[float, int, int]] = []  # (time, -1 end / +1 start, index); ends sort before starts
    for i, (start, end) in enumerate(intervals):
        if end > start:
            events += [(start, 1, i), (end, -1, i)]
    events.sort(key=lambda e: (e[0], e[1]))
    active: set[int] = set()
    last = 0.0
    for t, kind, i in events:
        if active and t > last:
            yield t - last, frozenset(active)
        last = t
        if kind == 1:
            active.add(i)
        else:
            active.discard(i)


def fair_shares(intervals: Sequence[tuple[float, float]]) -> list[float]:
    """``share_i`` of each ``(start, end)`` interval (see the module docstring). An interval with ``end <=
    start`` gets 0."""
    shares = [0.0] * len(intervals)
    for length, busy in _segments(intervals):
        for j in busy:
            shares[j] += length / len(busy)
    return shares


def peak_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals busy at one moment, :math:`\\max_t n(t)` (0 when none is ever busy): how many jobs
    actually shared the device at its busiest, whatever the pool's size was."""
    return max((len(busy) for _, busy in _segments(intervals)), default=0)
