"""Fair shares of one GPU among concurrent cells: golden values, invariants, and the costs that use them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rankdistill.experiments.artifacts import Artifact
from rankdistill.experiments.report import _cells_at_once, _gpu_seconds
from rankdistill.experiments.shares import fair_shares, peak_overlap


def test_fair_shares_golden_values():
    assert fair_shares([(0.0, 10.0)]) == [10.0]
    assert fair_shares([(0.0, 10.0), (5.0, 15.0)]) == [7.5, 7.5]  # 5 alone + 5 halved, each
    assert fair_shares([(0.0, 4.0), (10.0, 12.0)]) == [4.0, 2.0]  # disjoint: their own wall time
    # [0,1) job 0 alone; [1,2) three jobs; [2,3) jobs 0 and 2; [3,4) job 0 alone
    assert fair_shares([(0.0, 4.0), (1.0, 2.0), (1.0, 3.0)]) == pytest.approx([1 + 1 / 3 + 0.5 + 1, 1 / 3, 1 / 3 + 0.5])
    # one job ends exactly when another starts: they never overlap
    assert fair_shares([(0.0, 2.0), (2.0, 5.0)]) == [2.0, 3.0]
    assert fair_shares([(3.0, 3.0), (5.0, 4.0), (0.0, 1.0)]) == [0.0, 0.0, 1.0]
    assert fair_shares([]) == []


def test_peak_overlap_golden_values():
    assert peak_overlap([]) == 0
    assert peak_overlap([(3.0, 3.0), (5.0, 4.0)]) == 0  # never busy
    assert peak_overlap([(0.0, 10.0)]) == 1
    assert peak_overlap([(0.0, 2.0), (2.0, 5.0)]) == 1  # back to back: never side by side
    assert peak_overlap([(0.0, 4.0), (1.0, 2.0), (1.0, 3.0)]) == 3
    # six jobs, but at most two at once: the pool's size is not what ran
    assert peak_overlap([(float(i), float(i) + 1.5) for i in range(6)]) == 2


def _union(intervals):
    total, end = 0.0, -float("inf")
    for s, e in sorted((s, e) for s, e in intervals if e > s):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 30)), max_size=12))
def test_fair_shares_add_up_to_the_busy_time(raw):
    intervals = [(float(s), float(s + d)) for s, d in raw]
    shares = fair_shares(intervals)
    assert sum(shares) == pytest.approx(_union(intervals))
    for (s, e), share in zip(intervals, shares):
        assert (e - s) / len(intervals) - 1e-9 <= share <= e - s + 1e-9
    # at the busiest moment n jobs share the device, so no stretch of time is divided more than n ways
    peak = peak_overlap(intervals)
    assert peak == max((sum(s <= t < e for s, e in intervals) for t, _ in intervals), default=0)
    assert all(share >= (e - s) / peak - 1e-9 for (s, e), share in zip(intervals, shares) if e > s)


def _art(tmp: Path, name: str, gpu: float, started: float | None = None) -> Artifact:
    manifest = {"gpu_seconds": gpu}
    if started is not None:
        manifest |= {"started": started, "finished": started + gpu}
    return Artifact("train", name, tmp / name, manifest)


def test_cells_sharing_one_gpu_get_their_share(tmp_path):
    # two cells side by side: trainings [0, 10) and [5, 15), then one evaluation each, [10, 12) and [15, 16)
    a, b = _art(tmp_path, "a", 10.0, 0.0), _art(tmp_path, "b", 10.0, 5.0)
    ea, eb = _art(tmp_path, "ea", 2.0, 10.0), _art(tmp_path, "eb", 1.0, 15.0)
    cells = [("cell a", a, {"t": ea}), ("cell b", b, {"t": eb})]
    # a: [0,5) alone 5 + [5,10) halved 2.5; b: [5,10) 2.5 + [10,12) beside ea 1 + [12,15) alone 3
    assert _gpu_seconds(cells, one_device=True) == {a.path: 7.5, b.path: 6.5, ea.path: 1.0, eb.path: 1.0}
    # one GPU per worker (Ray): wall seconds
    assert _gpu_seconds(cells, one_device=False) == {a.path: 10.0, b.path: 10.0, ea.path: 2.0, eb.path: 1.0}
    # CPU artifacts take no part; manifests written before the times were recorded keep their wall seconds
    old, cpu = _art(tmp_path, "old", 4.0), _art(tmp_path, "cpu", 0.0, 3.0)
    assert _gpu_seconds([("old", old, {}), ("cpu", cpu, {"t": None})], one_device=True) == {old.path: 4.0}


def test_cells_at_once_is_read_from_the_run_not_the_config(tmp_path):
    # a pool of any size: cell a trains [0, 10) and evaluates [10, 12); b trains [5, 15); c trains [20, 21)
    a, b, c = _art(tmp_path, "a", 10.0, 0.0), _art(tmp_path, "b", 10.0, 5.0), _art(tmp_path, "c", 1.0, 20.0)
    ea = _art(tmp_path, "ea", 2.0, 10.0)
    cells = [("a", a, {"t": ea}), ("b", b, {"t": None}), ("c", c, {})]
    assert _cells_at_once(cells, one_device=True) == 2
    assert _cells_at_once(cells[2:], one_device=True) == 1
    assert _cells_at_once(cells, one_device=False) == 0  # Ray: a GPU per worker, nothing shared
