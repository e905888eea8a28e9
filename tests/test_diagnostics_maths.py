"""Entropy, spread, rank, kappa and locality: hand-computed golden values and property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from rankdistill.diagnostics import (
    UndefinedStatistic,
    binary_entropy_bits,
    kappa,
    log_kappa,
    mean_distance,
    normalized_softmax_entropy,
    pairwise_distances,
    pairwise_entropy,
    positive_rank,
    robust_diameter,
    score_spread,
    softmax_entropy,
    summary_quantiles,
)

LN2, LN3 = math.log(2.0), math.log(3.0)

scores_st = st.lists(st.floats(-30, 30, allow_nan=False, allow_infinity=False), min_size=2, max_size=16)
temperature_st = st.sampled_from([0.25, 0.5, 1.0, 2.0, 5.0])


# --- golden values --------------------------------------------------------------------------------------

def test_softmax_entropy_golden():
    # t = (0, ln 2, ln 3) -> p = softmax(t) = (1, 2, 3) / 6
    # H = 1/6 ln 6 + 1/3 ln 3 + 1/2 ln 2 = 0.298627 + 0.366204 + 0.346574 = 1.011404 nats
    t = [0.0, LN2, LN3]
    assert softmax_entropy(t) == pytest.approx(1.0114042647, abs=1e-9)
    # normalised: 1.011404 / ln 3 = 0.920620
    assert normalized_softmax_entropy(t) == pytest.approx(1.0114042647 / LN3, abs=1e-9)
    assert normalized_softmax_entropy(t) == pytest.approx(0.920620, abs=1e-6)
    # temperature 2 on doubled scores is the same distribution
    assert softmax_entropy([0.0, 2 * LN2, 2 * LN3], temperature=2.0) == pytest.approx(1.0114042647, abs=1e-9)


def test_softmax_entropy_matches_scipy():
    rng = np.random.default_rng(0)
    t = rng.normal(size=12) * 3
    p = scipy.special.softmax(t / 0.7)
    assert softmax_entropy(t, temperature=0.7) == pytest.approx(scipy.stats.entropy(p), rel=1e-12)


def test_pairwise_entropy_golden():
    # two documents, t = (0, ln 3): sigmoid(ln 3) = 3/4;
    # h2(3/4) = 0.75 log2(4/3) + 0.25 log2(4) = 0.311278 + 0.5 = 0.811278 bits
    assert pairwise_entropy([0.0, LN3]) == pytest.approx(0.8112781245, abs=1e-9)
    # three documents (0, 0, ln 3): pairs (0,0) -> 1 bit, two pairs (0, ln 3) -> 0.811278 each
    # mean = (1 + 2 * 0.811278) / 3 = 0.874185
    assert pairwise_entropy([0.0, 0.0, LN3]) == pytest.approx((1 + 2 * 0.8112781245) / 3, abs=1e-9)
    # temperature: (0, 2 ln 3) at tau = 2 is (0, ln 3) at tau = 1
    assert pairwise_entropy([0.0, 2 * LN3], temperature=2.0) == pytest.approx(0.8112781245, abs=1e-9)
    # the order of the pair does not matter, constant scores give exactly 1 bit
    assert pairwise_entropy([LN3, 0.0]) == pytest.approx(0.8112781245, abs=1e-9)
    assert pairwise_entropy([4.0, 4.0, 4.0]) == pytest.approx(1.0, abs=1e-12)


def test_binary_entropy_edges():
    np.testing.assert_allclose(binary_entropy_bits([0.0, 0.5, 1.0, 0.25]), [0.0, 1.0, 0.0, 0.8112781245],
                               atol=1e-9)


def test_torch_tensors_and_misplaced_arguments():
    """Teacher logits come as torch tensors needing grad or in bf16: the statistics take them as they are; a
    metric given where alpha goes, a fractional position or a probability outside [0, 1] is named."""
    import torch

    t = torch.tensor([LN3, LN2, 0.0], requires_grad=True)
    assert softmax_entropy(t) == pytest.approx(softmax_entropy([LN3, LN2, 0.0]))
    exact = torch.tensor([LN3, LN2, 0.1], dtype=torch.float64)  # float64 tensors are read without rounding
    assert normalized_softmax_entropy(exact) == normalized_softmax_entropy(exact.tolist())
    assert positive_rank(t.to(torch.bfloat16)) == 1
    e = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    assert robust_diameter(e, 0.95) == pytest.approx(1.9, abs=1e-12)
    assert mean_distance(e, e[0]) == pytest.approx(mean_distance(e.detach().numpy(), [0.0, 1.0]))
    with pytest.raises(TypeError, match="give the metric as metric='l2'"):
        robust_diameter(e, "l2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"positive_index must be an integer position, got 1\.5"):
        positive_rank([1.0, 2.0, 3.0], 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], got 1.5"):
        binary_entropy_bits([0.5, 1.5])


def test_spread_and_rank_golden():
    # (1, 3): mean 2, population std sqrt(((1-2)^2 + (3-2)^2) / 2) = 1, range 2
    s = score_spread([1.0, 3.0])
    assert (s.std, s.range) == (pytest.approx(1.0), pytest.approx(2.0))
    # positive scored 1 among (3, 1, 0): documents scoring >= 1 are 3 and the tie 1 -> rank 3
    assert positive_rank([1.0, 3.0, 1.0, 0.0]) == 3
    assert positive_rank([5.0, 3.0, 1.0]) == 1
    assert positive_rank([0.0, 3.0, 1.0], positive_index=1) == 1


def test_kappa_golden():
    # p = (1, 2, 3)/6, k = 3: kappa = 1 / (3 * 1/6) = 2
    assert kappa([0.0, LN2, LN3]) == pytest.approx(2.0, abs=1e-12)
    assert log_kappa([0.0, LN2, LN3]) == pytest.approx(LN2, abs=1e-12)
    # t = (0, ln 9), tau = 2 -> p = (1/4, 3/4), k = 2: kappa = 1 / (2 * 1/4) = 2
    assert kappa([0.0, math.log(9.0)], temperature=2.0) == pytest.approx(2.0, abs=1e-12)
    # uniform teacher: kappa = 1
    assert kappa([7.0, 7.0, 7.0, 7.0]) == pytest.approx(1.0, abs=1e-12)
    # a huge score range overflows kappa but log kappa stays finite: (0, 2000): log kappa ~ 2000 - ln 2
    assert kappa([0.0, 2000.0]) == math.inf
    assert log_kappa([0.0, 2000.0]) == pytest.approx(2000.0 - LN2, rel=1e-12)


def test_diameter_golden():
    # e1 = (1,0), e2 = (0,1), e3 = (-1,0)
    # cosine distances: d12 = 1, d13 = 2, d23 = 1 -> sorted (1, 1, 2)
    # linear 0.95-quantile: position 0.95 * 2 = 1.9 -> 1 + 0.9 * (2 - 1) = 1.9
    e = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(pairwise_distances(e, "cosine"), [1.0, 2.0, 1.0], atol=1e-12)
    assert robust_diameter(e, 0.95, "cosine") == pytest.approx(1.9, abs=1e-12)
    assert robust_diameter(e, 1.0, "cosine") == pytest.approx(2.0, abs=1e-12)
    assert robust_diameter(e, 0.5, "cosine") == pytest.approx(1.0, abs=1e-12)
    # L2: d12 = d23 = sqrt 2, d13 = 2 -> q95 = sqrt2 + 0.9 (2 - sqrt2) = 1.941421
    assert robust_diameter(e, 0.95, "l2") == pytest.approx(math.sqrt(2) + 0.9 * (2 - math.sqrt(2)), abs=1e-12)
    # cosine ignores the length of the vectors, L2 does not
    assert robust_diameter(e * [[3.0], [0.5], [2.0]], 0.95, "cosine") == pytest.approx(1.9, abs=1e-12)
    assert robust_diameter(e * 2, 0.95, "l2") == pytest.approx(2 * 1.941421356, abs=1e-8)


def test_mean_distance_golden():
    # negatives (0,1) and (-1,0) to the query (1,0): cosine 1 and 2 -> 1.5; L2 sqrt2 and 2 -> 1.707107
    negs = np.array([[0.0, 1.0], [-1.0, 0.0]])
    assert mean_distance(negs, [1.0, 0.0], "cosine") == pytest.approx(1.5)
    assert mean_distance(negs, [1.0, 0.0], "l2") == pytest.approx((math.sqrt(2) + 2) / 2)
    # several references: the mean over all 2 x 2 pairs: (1 + 2 + 0 + 1) / 4 = 1
    assert mean_distance(negs, np.array([[1.0, 0.0], [0.0, 1.0]]), "cosine") == pytest.approx(1.0)


def test_summary_quantiles_golden():
    # values 1..5 (NaN ignored): mean 3, linear quantiles q0.25 = 2, q0.5 = 3, q0.05 = 1.2
    s = summary_quantiles([1.0, 2.0, 3.0, 4.0, 5.0, math.nan], (0.05, 0.25, 0.5))
    assert s == {"n": 5.0, "mean": 3.0, "q0.05": pytest.approx(1.2), "q0.25": 2.0, "q0.5": 3.0}


# --- undefined inputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [softmax_entropy, normalized_softmax_entropy, pairwise_entropy, kappa,
                                score_spread])
def test_one_document_is_undefined(fn):
    with pytest.raises(UndefinedStatistic, match="at least 2"):
        fn([1.5])


@pytest.mark.parametrize("fn", [softmax_entropy, pairwise_entropy, kappa, score_spread, positive_rank])
def test_nan_score_is_undefined(fn):
    with pytest.raises(UndefinedStatistic, match="non-finite"):
        fn([1.0, math.nan, 0.0])


def test_bad_temperature_and_metric():
    with pytest.raises(ValueError, match="temperature"):
        softmax_entropy([0.0, 1.0], temperature=0.0)
    with pytest.raises(ValueError, match="unknown metric"):
        robust_diameter(np.eye(3), 0.9, "manhattan")  # type: ignore[arg-type]
    with pytest.raises(UndefinedStatistic, match="all-zero"):
        robust_diameter(np.array([[0.0, 0.0], [1.0, 0.0]]), 0.9, "cosine")
    with pytest.raises(UndefinedStatistic, match="at least 2"):
        robust_diameter(np.ones((1, 4)), 0.9, "l2")


# --- properties -----------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(scores_st, temperature_st, st.randoms(use_true_random=False),
       st.floats(-100, 100, allow_nan=False))
def test_entropy_properties(scores, tau, rnd, shift):
    k = len(scores)
    h = softmax_entropy(scores, tau)
    assert -1e-12 <= h <= math.log(k) + 1e-12
    # maximal at uniform
    assert h <= softmax_entropy([0.0] * k, tau) + 1e-12
    assert softmax_entropy([0.0] * k, tau) == pytest.approx(math.log(k), abs=1e-12)
    assert 0.0 - 1e-12 <= normalized_softmax_entropy(scores, tau) <= 1.0 + 1e-12
    perm = list(scores)
    rnd.shuffle(perm)
    shifted = [s + shift for s in scores]
    for fn in (softmax_entropy, pairwise_entropy, log_kappa):
        ref = fn(scores, tau)
        assert fn(perm, tau) == pytest.approx(ref, abs=1e-9)
        assert fn(shifted, tau) == pytest.approx(ref, abs=1e-6)
    pw = pairwise_entropy(scores, tau)
    assert -1e-12 <= pw <= 1.0 + 1e-12
    assert log_kappa(scores, tau) >= 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.integers(0, 10_000), st.sampled_from(["cosine", "l2"]),
       st.floats(0.0, 1.0))
def test_diameter_properties(k, dim, seed, metric, alpha):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(k, dim))
    d = robust_diameter(e, alpha, metric)
    assert d >= 0.0
    assert robust_diameter(e[rng.permutation(k)], alpha, metric) == pytest.approx(d, abs=1e-12)
    # monotone in alpha, bounded by the plain diameter
    assert d <= robust_diameter(e, 1.0, metric) + 1e-12
    if metric == "l2":
        assert robust_diameter(e + rng.normal(size=dim), alpha, metric) == pytest.approx(d, abs=1e-9)
    else:
        assert robust_diameter(e * rng.uniform(0.5, 3.0, size=(k, 1)), alpha, metric) == pytest.approx(d, abs=1e-9)
        assert d <= 2.0 + 1e-12


@settings(max_examples=40, deadline=None)
@given(scores_st)
def test_rank_properties(scores):
    r = positive_rank(scores)
    assert 1 <= r <= len(scores)
    assert r == 1 + sum(1 for s in scores[1:] if s >= scores[0])


def test_the_default_alpha_and_kappa_never_below_one():
    """Found by mutation: every test passed alpha, so another default passed; and kappa's clamp at 1 was never
    reached. Cosine distances of [1,0], [0,1], [-1,0] are 1, 2, 1: the 0.95-quantile (linear) is 1.9. A group
    whose last-bit differences make log kappa -4.4e-16 must still give kappa >= 1 (its minimum is 1/k)."""
    e = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert robust_diameter(e) == pytest.approx(1.9, abs=1e-12)
    t = [0.805613735463265] * 27 + [0.8056137354632651, 0.805613735463265]
    assert log_kappa(t) >= 0.0 and kappa(t) >= 1.0
