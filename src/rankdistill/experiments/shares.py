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

from collections.abc import Sequence


def fair_shares(intervals: Sequence[tuple[float, float]]) -> list[float]:
    """``share_i`` of each ``(start, end)`` interval (see the module docstring). An interval with ``end <=
    start`` gets 0."""
    events: list[tuple[float, int, int]] = []  # (time, +1 start / -1 end, index); ends sort before starts
    for i, (start, end) in enumerate(intervals):
        if end > start:
            events += [(start, 1, i), (end, -1, i)]
    events.sort(key=lambda e: (e[0], e[1]))
    shares = [0.0] * len(intervals)
    active: set[int] = set()
    last = 0.0
    for t, kind, i in events:
        if active and t > last:
            each = (t - last) / len(active)
            for j in active:
                shares[j] += each
        last = t
        if kind == 1:
            active.add(i)
        else:
            active.discard(i)
    return shares
