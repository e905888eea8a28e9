"""Claim verdicts over families of comparisons: one-sided p-values, the intersection-union rule for "adds
little", Holm across the family for the unions, and paired shifts of a per-query statistic."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from rankdistill.stats.claims import adds_little, differences, one_sided_p, paired_shift, significant
from rankdistill.stats.tost import paired_tost


@dataclass(frozen=True)
class Est:
    mean_diff: float
    se: float
    df: int
    ci_low: float = math.nan
    ci_high: float = math.nan


def test_one_sided_p_golden():
    # t = (0.002 - 0.01) / 0.004 = -2 with 99 df: P(T <= -2) = 0.0241198 (t table)
    assert one_sided_p(0.002, 0.004, 99, 0.01, "less") == pytest.approx(0.0241198, abs=1e-6)
    # t = 3 with 9 df: P(T >= 3) = 0.0074782
    assert one_sided_p(0.03, 0.01, 9, 0.0, "greater") == pytest.approx(0.0074782, abs=1e-6)
    # constant differences: all or nothing
    assert one_sided_p(0.02, 0.0, 5, 0.01, "greater") == 0.0
    assert one_sided_p(0.02, 0.0, 5, 0.01, "less") == 1.0
    with pytest.raises(ValueError):
        one_sided_p(0.0, 1.0, 5, 0.0, "two-sided")


def test_one_sided_p_matches_the_tost_halves():
    rng = np.random.default_rng(3)
    x = rng.random(60)
    y = x - 0.004 + rng.normal(0, 0.03, 60)
    t = paired_tost(x, y, margin=0.01, alpha=0.05)
    assert one_sided_p(t.mean_diff, t.se, t.df, 0.01, "less") == pytest.approx(t.p_upper, rel=1e-9)
    assert one_sided_p(t.mean_diff, t.se, t.df, -0.01, "greater") == pytest.approx(t.p_lower, rel=1e-9)


def test_adds_little_supported_only_when_every_comparison_is_shown_below_the_margin():
    # t = (0 - 0.01) / 0.002 = -5: shown; t = (0.004 - 0.01) / 0.002 = -3: shown
    fam = [("a", Est(0.0, 0.002, 99)), ("b", Est(0.004, 0.002, 99))]
    res = adds_little(fam, margin=0.01, alpha=0.05)
    assert res.verdict == "supported" and res.shown_little == ("a", "b") and res.undetermined == ()
    # b is better than zero (t = 2, p = 0.024 < 0.05 / 1 after Holm: a's p is about 0.5, so b is tested first
    # at 0.05 / 2 = 0.025) and still shown to add less than the margin
    assert [f.label for f in res.better] == ["b"]
    assert res.better[0].p_adjusted == pytest.approx(2 * one_sided_p(0.004, 0.002, 99, 0.0, "greater"))
    # a wide interval: not different, but not shown to be small either -> undetermined, never "supported"
    wide = [*fam, ("c", Est(0.0, 0.02, 99))]
    res = adds_little(wide, margin=0.01, alpha=0.05)
    assert res.verdict == "undetermined" and [f.label for f in res.undetermined] == ["c"]
    # better by more than the margin: t = (0.05 - 0.01) / 0.005 = 8
    res = adds_little([*wide, ("d", Est(0.05, 0.005, 99))], margin=0.01, alpha=0.05)
    assert res.verdict == "contradicted" and [f.label for f in res.beyond_margin] == ["d"]
    assert adds_little([], margin=0.01, alpha=0.05).verdict == "undetermined"


def test_holm_keeps_chance_wins_out_of_the_union():
    # 20 comparisons each one-sided p = P(T >= 2, 49 df) = 0.0255: every one "better" unadjusted, none after Holm
    p = one_sided_p(0.02, 0.01, 49, 0.0, "greater")
    assert p == pytest.approx(0.0255296, abs=1e-6)
    fam = [(str(i), Est(0.02, 0.01, 49)) for i in range(20)]
    assert len(significant(fam, "greater", 0.05, correction="none")) == 20
    assert significant(fam, "greater", 0.05, correction="holm") == ()
    assert adds_little(fam, margin=0.01, alpha=0.05).better == ()


def test_differences_two_sided_and_signed():
    fam = [("up", Est(0.05, 0.01, 99)), ("down", Est(-0.05, 0.01, 99)), ("flat", Est(0.001, 0.01, 99))]
    res = differences(fam, alpha=0.05)
    assert [f.label for f in res.higher] == ["up"] and [f.label for f in res.lower] == ["down"]
    assert res.mean_abs_diff == pytest.approx((0.05 + 0.05 + 0.001) / 3)
    # two-sided p of t = 5 with 99 df, times 3 (Holm, smallest first)
    assert res.higher[0].p_adjusted == pytest.approx(3 * 2 * one_sided_p(0.05, 0.01, 99, 0.0, "greater"))


def test_paired_shift_golden():
    # differences on the common queries a, b, c: -0.5, 0.5, 1.0; mean 1/3, sd sqrt(7/12), se 0.4409586;
    # 90% t interval with 2 df: t = 2.9199856 -> [-0.9542595, 1.6209261]
    s = paired_shift("x", {"a": 1.0, "b": 2.0, "c": 4.0, "z": 0.0}, {"a": 1.5, "b": 1.5, "c": 3.0, "d": 9.0},
                     alpha=0.05)
    assert s is not None and s.n == 3 and s.df == 2
    assert s.mean_diff == pytest.approx(1 / 3)
    assert s.se == pytest.approx(0.4409586, abs=1e-7)
    assert (s.ci_low, s.ci_high) == pytest.approx((-0.9542595, 1.6209261), abs=1e-6)
    assert s.median_diff == pytest.approx(0.5) and s.share_smaller == pytest.approx(1 / 3)
    assert paired_shift("x", {"a": 1.0}, {"a": 2.0}, alpha=0.05) is None
    assert paired_shift("x", {"a": 1.0, "b": math.nan}, {"a": 2.0, "b": 1.0}, alpha=0.05) is None


def test_entropy_claims_contrast_middle_bands_against_outer_ones(tmp_path):
    """The moderate-entropy contrast on hand-made per-query files: 40 queries, 2 seeds whose noise cancels in
    the seed average. Bands add 0, 0.06, 0.04 +- 0.02 (alternating) and -0.02 to the `all` system, so the
    contrast (q2 + q3) / 2 - (q1 + q4) / 2 is 0.06 +- 0.01: mean 0.06, se 0.01 / sqrt(39) = 0.0016013, 90%
    interval with 39 df (t = 1.6848751) [0.0573020, 0.0626980]. The top band minus `all` is -0.02 everywhere."""
    from types import SimpleNamespace

    from rankdistill.evaluation.measures import write_per_query
    from rankdistill.experiments.report import _entropy_claims
    from rankdistill.stats import ComparisonConfig, StudyEntry, run_study

    bands = ["keep_lower_quartile", "keep_second_quartile", "keep_third_quartile", "keep_upper_quartile"]
    offsets = {"all": lambda i: 0.0, bands[0]: lambda i: 0.0, bands[1]: lambda i: 0.06,
               bands[2]: lambda i: 0.04 + (0.02 if i % 2 else -0.02), bands[3]: lambda i: -0.02}
    entries = []
    for system, off in offsets.items():
        for seed, noise in ((0, 0.01), (1, -0.01)):
            path = tmp_path / f"{system}-{seed}.tsv"
            write_per_query({"nDCG@10": {f"q{i:02d}": 0.5 + 0.01 * (i % 5) + off(i) + noise * (-1) ** i
                                         for i in range(40)}}, path)
            entries.append(StudyEntry(path=path, system=system, collection="scifact", seed=seed))
    st = run_study(entries, ComparisonConfig(metric="nDCG@10", margin=0.01, baseline="all", bootstrap=0),
                   strict=False)
    assert st.collections["scifact"].values[bands[1]]["q03"] == pytest.approx(0.5 + 0.03 + 0.06)
    cfg = SimpleNamespace(entropy_study=SimpleNamespace(bands=bands),
                          comparison=SimpleNamespace(alpha=0.05, correction="holm", metric="nDCG@10", margin=0.01))
    key = ("cross", "lce", 16)
    record: dict = {}
    moderate, _, hurts, _ = _entropy_claims(cfg, {key: st}, record)
    assert record["moderate_entropy_is_best"]["verdict"] == "supported"
    assert record["moderate_entropy_is_best"]["contrast"][0]["mean_diff"] == pytest.approx(0.06)
    assert record["high_entropy_hurts"]["verdict"] == "supported"
    assert record["high_entropy_hurts"]["worse"] == ["cross/lce @ scifact"]
    assert "cross/lce @ scifact: keep_second_quartile (0.5800 [0.5800, 0.5800] over seeds)" in moderate
    assert "A middle band is best in 1 of 1 cases (chance alone would give about 0.5)" in moderate
    assert "cross/lce @ scifact: +0.0600 [+0.0573, +0.0627]" in moderate
    assert "significantly better in 1 (cross/lce @ scifact) and significantly worse in 0: the run **supports**" \
        in moderate
    assert "cross/lce @ scifact: -0.0200 [-0.0200, -0.0200] (seed by seed: -0.0200, -0.0200) (1 of 1 with the " \
        "sign of the seed average in every seed)" in hurts and "**supports** the claim" in hurts
    assert record["high_entropy_hurts"]["by_seed"]["cross/lce @ scifact"] == pytest.approx({0: -0.02, 1: -0.02})
    # with no middle band there is no contrast: only the descriptive part remains
    two = SimpleNamespace(entropy_study=SimpleNamespace(bands=[bands[0], bands[3]]), comparison=cfg.comparison)
    assert "minus the outer ones" not in _entropy_claims(two, {key: st})[0]


@pytest.mark.parametrize("missing", ["drop", "zero"])
def test_study_means_are_those_of_the_queries_compared(tmp_path, missing):
    """A lacks nothing, B lacks 5 of 40 queries. The table's means (over_seeds) were each system's mean over
    its own queries (B 0.5827 beside a comparison of B at 0.5099 under zero), so a bold best disagreed with
    the difference beside it. Now each seed's mean is over the queries of the comparison, counting a missing
    query 0 under ``zero``: A's mean minus B's is the compared mean difference, by hand too."""
    from rankdistill.evaluation.measures import write_per_query
    from rankdistill.stats import ComparisonConfig, StudyEntry, run_study

    a = {f"q{i:02d}": 0.5 + 0.01 * (i % 5) for i in range(40)}
    b = {q: v + 0.02 for q, v in a.items() if int(q[1:]) >= 5}
    entries = []
    for name, values in (("A", a), ("B", b)):
        for seed, shift in ((0, 0.0), (1, 0.004)):
            path = tmp_path / f"{name}-{seed}.tsv"
            write_per_query({"nDCG@10": {q: v + shift for q, v in values.items()}}, path)
            entries.append(StudyEntry(path=path, system=name, collection="c", seed=seed))
    st = run_study(entries, ComparisonConfig(metric="nDCG@10", margin=0.01, baseline="A", bootstrap=0),
                   missing=missing, strict=False)
    res = st.collections["c"]
    row = next(r for r in res.report.rows if r.name == "B")
    assert res.over_seeds["B"].mean - res.over_seeds["A"].mean == pytest.approx(row.mean_diff)
    qs = sorted(b) if missing == "drop" else sorted(a)
    by_hand_b = np.mean([b.get(q, -0.002) + 0.002 for q in qs])  # seeds shift by 0 and 0.004: mean +0.002
    by_hand_a = np.mean([a[q] + 0.002 for q in qs])
    assert res.over_seeds["B"].mean == pytest.approx(by_hand_b)
    assert res.over_seeds["A"].mean == pytest.approx(by_hand_a)


def test_worse_beyond_the_margin_and_the_edges_of_the_one_sided_tests():
    """Found by mutation: `worse` was never checked (the wrong side passed), nor `beyond_margin` against the
    margin rather than 0, a constant difference exactly at mu0, a df below 1, a zero difference counted as
    smaller, two queries (the least that has an interval), or `significant`'s default correction."""
    r = adds_little([("b", Est(0.004, 0.002, 99)), ("e", Est(-0.05, 0.005, 99))], 0.01, 0.05)
    assert [f.label for f in r.worse] == ["e"]
    one = adds_little([("b", Est(0.012, 0.002, 99))], 0.01, 0.05)  # better than the baseline, not beyond 0.01
    assert one.beyond_margin == () and one.verdict == "undetermined"
    for alternative in ("greater", "less"):
        assert one_sided_p(0.01, 0.0, 5, 0.01, alternative) == 1.0  # a constant on the bound rejects nothing
    assert one_sided_p(0.02, 0.01, 0, 0.0, "greater") == 0.0  # no df: the constant (se as given) decides
    shift = paired_shift("x", {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 1.0, "c": 4.0}, 0.05)
    assert shift.share_smaller == pytest.approx(1 / 3)  # d = (0, 1, -1): only -1 is smaller
    two = paired_shift("x", {"a": 1.0, "b": 2.0}, {"a": 0.0, "b": 0.0}, 0.05)
    t95 = 6.313752  # t_{0.95, 1}; mean 1.5, se = sd / sqrt(2) = 0.5, a 90% interval
    assert (two.ci_low, two.ci_high) == pytest.approx((1.5 - t95 * 0.5, 1.5 + t95 * 0.5), abs=1e-6)
    # twenty comparisons each at p = 0.0253 one-sided: significant alone, none after Holm (the default)
    family = [(str(i), Est(0.02, 0.01, 49)) for i in range(20)]
    assert significant(family, "greater", 0.05) == ()
    assert len(significant(family, "greater", 0.05, correction="none")) == 20


def _seed_study(tmp_path, seed_2: bool):
    """X minus the baseline is +0.03 in seed 0 and 0 in seed 1, with +-0.005 per query that cancels between
    them (40 queries); with ``seed_2``, X also has a seed 2 equal to the baseline, which the baseline lacks."""
    from rankdistill.evaluation.measures import write_per_query
    from rankdistill.stats import ComparisonConfig, StudyEntry, run_study

    base = {f"q{i:02d}": 0.5 + 0.01 * (i % 5) for i in range(40)}
    runs = {("random", 0): base, ("random", 1): base,
            ("X", 0): {q: v + 0.03 + 0.005 * (-1) ** i for i, (q, v) in enumerate(base.items())},
            ("X", 1): {q: v - 0.005 * (-1) ** i for i, (q, v) in enumerate(base.items())}}
    if seed_2:
        runs["X", 2] = base
    entries = []
    for (system, seed), values in runs.items():
        path = tmp_path / f"{system}-{seed}.tsv"
        write_per_query({"nDCG@10": values}, path)
        entries.append(StudyEntry(path=path, system=system, collection="c", seed=seed))
    return run_study(entries, ComparisonConfig(metric="nDCG@10", margin=0.01, baseline="random", bootstrap=0),
                     strict=False)


def test_verdicts_seed_by_seed_show_what_the_seed_average_hides(tmp_path):
    """With X's seed 2 the seed average's difference is +0.01 on every query (inconclusive: on the margin);
    seed 0's interval is about +0.03 +- 0.0013 (different) and seed 1's about 0 +- 0.0013 (equivalent); seed 2
    has no baseline to be compared with."""
    res = _seed_study(tmp_path, seed_2=True).collections["c"]
    [row] = res.report.rows
    assert row.mean_diff == pytest.approx(0.01) and row.tost.verdict == "inconclusive"  # X's seeds: +0.03, 0, 0
    assert res.verdicts_by_seed() == {"X": {0: "different", 1: "equivalent"}}
    assert len(res.query_ids) == 40 and set(res.seeds["X"]) == {0, 1, 2}


def test_the_report_lists_the_verdicts_of_the_seed_average_that_a_seed_reverses(tmp_path):
    """Seeds 0 and 1 only: the average's difference is +0.015 on every query (different), seed 1's equivalent,
    so seed 1 reverses the average's verdict."""
    from rankdistill.experiments.report import _seed_stability, _verdicts_by_seed

    studies = {("bi", "kl", 16, "all"): _seed_study(tmp_path, seed_2=False)}
    by_seed = _verdicts_by_seed(studies)
    assert by_seed == {(("bi", "kl", 16, "all"), "c", "X"): {0: "different", 1: "equivalent"}}
    text = "\n".join(_seed_stability(studies, by_seed, 0.01, [0, 1]))
    # X's two seed means differ by 0.03: sd 0.03 / sqrt(2) = 0.0212; the baseline's is 0; their median 0.0106
    assert "median sd of 0.0106 (largest 0.0212), against the margin of 0.01" in text
    assert "| different | 1 | 0 |" in text and "| equivalent | 0 | 0 |" in text
    assert "some seed reverses: bi/kl/X @ c (different; equivalent in seed 1)." in text
    # a verdict counts as every seed's only where every seed of the study could give one: seed 1 had no run
    only_seed_0 = {k: {0: v[0]} for k, v in by_seed.items()}
    assert "| different | 1 | 0 |" in "\n".join(_seed_stability(studies, only_seed_0, 0.01, [0, 1]))
    assert "| different | 1 | 1 |" in "\n".join(_seed_stability(studies, only_seed_0, 0.01, [0]))


def test_every_seed_is_counted_against_the_studys_seeds_for_each_verdict():
    """Y is equivalent in both seeds; X is different on the average with a verdict from seed 0 only. Listing
    Y's reversals once overwrote the study's seeds, so X was then counted as given by every seed."""
    from types import SimpleNamespace

    from rankdistill.experiments.report import _seed_stability

    def row(name: str, verdict: str):
        return SimpleNamespace(name=name, tost=SimpleNamespace(verdict=verdict))

    key = ("bi", "kl", 16, "all")
    report = SimpleNamespace(rows=[row("Y", "equivalent"), row("X", "different")])
    studies = {key: SimpleNamespace(collections={"c": SimpleNamespace(over_seeds={}, report=report)})}
    by_seed = {(key, "c", "Y"): {0: "equivalent", 1: "equivalent"}, (key, "c", "X"): {0: "different"}}
    text = "\n".join(_seed_stability(studies, by_seed, 0.01, [0, 1]))
    assert "| equivalent | 1 | 1 |" in text and "| different | 1 | 0 |" in text


def test_differences_seed_by_seed_beside_the_claims_findings(tmp_path):
    """X minus the baseline is +0.03 in seed 0 and exactly 0 in seed 1 (the +-0.005 per query cancels over the
    40 queries); seed 2 has no baseline run, so it gives no difference. A finding of the seed average is listed
    with its differences seed by seed and counted as keeping its sign only where every seed has that sign (a
    seed at 0 does not); a finding of one seed gets neither."""
    from rankdistill.experiments.report import _diffs_by_seed, _listing
    from rankdistill.stats.claims import Finding

    study = _seed_study(tmp_path, seed_2=True)
    res = study.collections["c"]
    assert res.diffs_by_seed() == {"X": pytest.approx({0: 0.03, 1: 0.0})}
    per = _diffs_by_seed({("cross", "kl", 16, "all"): study})
    assert per == {"cross": {"kl/X @ c": pytest.approx({0: 0.03, 1: 0.0})}}
    found = [Finding("kl/X @ c", 0.01, 0.009, 0.011, 0.01), Finding("kl/Y @ c", 0.02, 0.01, 0.03, 0.01),
             Finding("kl/Z @ c", -0.02, -0.03, -0.01, 0.01)]
    seeds = {**per["cross"], "kl/Y @ c": {0: 0.01, 1: 0.03}, "kl/Z @ c": {0: -0.02}}
    text = _listing(found, by_seed=seeds)
    assert text == ("kl/X @ c: +0.0100 [+0.0090, +0.0110] (seed by seed: +0.0300, +0.0000); "
                    "kl/Y @ c: +0.0200 [+0.0100, +0.0300] (seed by seed: +0.0100, +0.0300); "
                    "kl/Z @ c: -0.0200 [-0.0300, -0.0100] (1 of 2 with the sign of the seed average in every seed)")
    assert _listing(found[:1], by_seed={"kl/X @ c": {0: -0.01, 1: -0.02}}).endswith("(0 of 1 with the sign of "
                                                                                   "the seed average in every seed)")
    assert _listing(found) == "; ".join(f.describe() for f in found)  # one seed: as before
