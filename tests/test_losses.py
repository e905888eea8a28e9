"""Loss functions: hand-computed golden values, properties, and parity with sentence-transformers."""

from __future__ import annotations

import math

import pytest
import torch

from rankdistill.errors import UserInputError
from rankdistill.losses import LOSSES, get_loss, infonce, kl, lce, listnet, make_loss, margin_mse, ranknet

LN2, LN3, LN5 = math.log(2), math.log(3), math.log(5)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- golden values ---------------------------------------------------------------------------------------

def test_lce_golden():
    # row 1: s = [ln2, 0, 0] -> exp = [2, 1, 1] -> p0 = 2/4 -> -log p0 = ln 2
    # row 2: s = [0, ln3, 0] -> exp = [1, 3, 1] -> p0 = 1/5 -> -log p0 = ln 5
    # mean over the batch = (ln2 + ln5) / 2 = ln(10) / 2 = 1.1512925
    s = t([[LN2, 0, 0], [0, LN3, 0]])
    assert lce(s).item() == pytest.approx(math.log(10) / 2, abs=1e-6)
    assert lce(s, t([[9, 9, 9], [9, 9, 9]])).item() == pytest.approx(math.log(10) / 2, abs=1e-6)


def test_infonce_golden_temperature_and_in_batch_columns():
    # tau = 0.5: s / tau = [2 ln2, 0, 0] -> exp = [4, 1, 1] -> p0 = 4/6 -> loss = ln(6/4) = ln 1.5
    assert infonce(t([[LN2, 0, 0]]), temperature=0.5).item() == pytest.approx(math.log(1.5), abs=1e-6)
    # an extra in-batch column with score ln2: exp = [2, 1, 1, 2] -> p0 = 2/6 -> loss = ln 3
    assert infonce(t([[LN2, 0, 0, LN2]])).item() == pytest.approx(LN3, abs=1e-6)
    # tau = 1 on the group alone is LCE
    s = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    assert infonce(s).item() == pytest.approx(lce(s).item(), abs=1e-6)


def test_kl_golden():
    # teacher [ln2, 0, 0] -> p_t = [1/2, 1/4, 1/4]; student [0, 0, 0] -> p_s = [1/3, 1/3, 1/3]
    # KL = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8) = 0.0588915
    assert kl(t([[0, 0, 0]]), t([[LN2, 0, 0]])).item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)
    # T = 2: p_t = softmax([ln2/2, 0, 0]) = [r, 1, 1] / (r + 2), r = sqrt 2 -> [0.4142136, 0.2928932, 0.2928932]
    # KL = 0.4142136 ln(3 * 0.4142136) + 2 * 0.2928932 ln(3 * 0.2928932)
    #    = 0.4142136 * 0.2172336 + 0.5857864 * (-0.1293326) = 0.0899812 - 0.0757608 = 0.0142204
    r = math.sqrt(2)
    pt = [r / (r + 2), 1 / (r + 2), 1 / (r + 2)]
    expected = sum(p * math.log(3 * p) for p in pt)
    assert expected == pytest.approx(0.0142204, abs=1e-6)
    assert kl(t([[0, 0, 0]]), t([[LN2, 0, 0]]), temperature=2.0).item() == pytest.approx(expected, abs=1e-6)
    # t2_scaling multiplies by T^2 = 4
    assert kl(t([[0, 0, 0]]), t([[LN2, 0, 0]]), temperature=2.0, t2_scaling=True).item() == pytest.approx(
        4 * expected, abs=1e-6)
    # batchmean: a second row identical to the teacher adds 0 and halves the mean
    two = kl(t([[0, 0, 0], [LN2, 0, 0]]), t([[LN2, 0, 0], [LN2, 0, 0]])).item()
    assert two == pytest.approx(0.25 * math.log(9 / 8), abs=1e-6)


def test_listnet_golden_and_relation_to_kl():
    # p_t = [1/2, 1/4, 1/4], p_s uniform: -sum p_t log p_s = ln 3 = 1.0986123
    # = KL (1/2 ln 9/8 = 0.0588915) + H(p_t) (1/2 ln2 + 1/2 ln4 = 1.5 ln2 = 1.0397208)
    assert listnet(t([[0, 0, 0]]), t([[LN2, 0, 0]])).item() == pytest.approx(LN3, abs=1e-6)
    g = torch.Generator().manual_seed(3)
    s, te = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g) * 3
    pt = torch.softmax(te, -1)
    entropy = -(pt * pt.log()).sum(-1).mean()
    assert listnet(s, te).item() == pytest.approx((kl(s, te) + entropy).item(), abs=1e-5)


def test_margin_mse_golden():
    # s = [3, 1, 0], t = [2, 1, 1]
    # pos_vs_negs: student margins [2, 3], teacher margins [1, 1] -> errors [1, 2] -> (1 + 4) / 2 = 2.5
    # all_pairs (0,1),(0,2),(1,2): student [2, 3, 1], teacher [1, 1, 0] -> errors [1, 2, 1] -> 6 / 3 = 2.0
    s, te = t([[3, 1, 0]]), t([[2, 1, 1]])
    assert margin_mse(s, te).item() == pytest.approx(2.5, abs=1e-6)
    assert margin_mse(s, te, pairs="all_pairs").item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="pos_vs_negs"):
        margin_mse(s, te, pairs="every")


def test_ranknet_golden():
    # s = [1, 0, 0], t = [2, 1, 1]. Pairs (0,1), (0,2): d = 1, teacher prefers i -> y = 1
    #   loss = softplus(-1) = ln(1 + e^-1) = 0.3132617 each; pair (1,2) is a teacher tie.
    s, te = t([[1, 0, 0]]), t([[2, 1, 1]])
    sp1 = math.log(1 + math.exp(-1))
    assert sp1 == pytest.approx(0.3132617, abs=1e-7)
    assert ranknet(s, te).item() == pytest.approx(sp1, abs=1e-6)
    # ties included: pair (1,2) has d = 0, y = 1/2 -> ln 2; mean = (2 * 0.3132617 + 0.6931472) / 3 = 0.4398902
    assert ranknet(s, te, ties="include").item() == pytest.approx((2 * sp1 + LN2) / 3, abs=1e-6)
    # soft targets: y = sigmoid(1) = 0.7310586; loss = softplus(1) - y * 1 = 1.3132617 - 0.7310586 = 0.5822031
    assert ranknet(s, te, targets="soft").item() == pytest.approx(
        math.log(1 + math.e) - 1 / (1 + math.exp(-1)), abs=1e-6)
    # the student reversing the teacher's order: d = -1, y = 1 -> softplus(1) = 1.3132617
    assert ranknet(t([[0, 1]]), t([[5, 0]])).item() == pytest.approx(math.log(1 + math.e), abs=1e-6)
    # only ties: no pair kept -> 0, and still differentiable
    s0 = t([[0.3, 0.1]]).requires_grad_()
    out = ranknet(s0, t([[1, 1]]))
    out.backward()
    assert out.item() == 0.0 and s0.grad is not None


# --- properties ------------------------------------------------------------------------------------------

def test_distillation_losses_vanish_when_student_equals_teacher_up_to_a_shift():
    g = torch.Generator().manual_seed(0)
    te = torch.randn(3, 8, generator=g)
    shifted = te + torch.tensor([[5.0], [-2.0], [0.5]])
    assert kl(shifted, te).item() == pytest.approx(0.0, abs=1e-6)
    assert margin_mse(shifted, te).item() == pytest.approx(0.0, abs=1e-10)
    assert margin_mse(shifted, te, pairs="all_pairs").item() == pytest.approx(0.0, abs=1e-10)
    # a different student is penalised
    assert kl(-te, te).item() > 0.1


def test_gradients_push_the_positive_up_for_contrastive_losses():
    s = torch.zeros(2, 4, requires_grad=True)
    lce(s).backward()
    # d/ds0 of -log softmax_0 = p0 - 1 = 1/4 - 1; d/dsj = pj = 1/4
    assert torch.allclose(s.grad, torch.tensor([[-0.75, 0.25, 0.25, 0.25]] * 2) / 2)


# --- registry --------------------------------------------------------------------------------------------

def test_registry_contents_and_teacher_flags():
    assert set(LOSSES) == {"lce", "infonce", "margin_mse", "ranknet", "kl", "listnet"}
    assert {n for n, spec in LOSSES.items() if spec.needs_teacher} == {"margin_mse", "ranknet", "kl", "listnet"}
    assert LOSSES["infonce"].in_batch and not LOSSES["kl"].in_batch
    assert LOSSES["kl"].options == ("temperature", "t2_scaling")
    assert "KL divergence" in LOSSES["kl"].summary


def test_unknown_loss_lists_valid_names():
    with pytest.raises(UserInputError) as e:
        get_loss("mse")
    assert "infonce, kl, lce, listnet, margin_mse, ranknet" in str(e.value)


def test_make_loss_binds_and_rejects_foreign_options():
    fn = make_loss("kl", temperature=2.0, t2_scaling=None)
    s, te = t([[0, 0, 0]]), t([[LN2, 0, 0]])
    assert fn(s, te).item() == pytest.approx(kl(s, te, temperature=2.0).item())
    with pytest.raises(UserInputError, match=r"does not take option.*temperature"):
        make_loss("margin_mse", temperature=2.0)


def test_shape_errors_say_what_to_pass():
    with pytest.raises(ValueError, match=r"teacher scores have shape \(2, 3\) but student scores \(2, 4\)"):
        kl(torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs teacher scores"):
        margin_mse(torch.zeros(2, 4), None)
    with pytest.raises(ValueError, match=r"\[batch, group\]"):
        lce(torch.zeros(4))
    with pytest.raises(ValueError, match=r"lce: the batch is empty"):  # was NaN (ranknet: 0)
        lce(torch.zeros(0, 4))
    with pytest.raises(TypeError, match=r"kl: teacher scores must be a torch\.Tensor .* got list"):
        kl(torch.zeros(2, 4), [[0.0] * 4] * 2)
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got '2'"):
        kl(torch.zeros(2, 4), torch.zeros(2, 4), temperature="2")


def test_left_out_documents_and_nan_teachers():
    """A document both sides score -inf (padding) is a term 0 log 0 = 0 of kl and listnet (kl was NaN), so
    listnet - kl is still the teacher's entropy over the rest; a NaN teacher score gives a NaN loss in every
    distillation loss (ranknet gave a finite loss, dropping the NaN pairs' information silently)."""
    s, t = torch.tensor([[2.0, 1.0, 0.5]]), torch.tensor([[3.0, 0.5, -1.0]])
    pad = torch.tensor([[-math.inf]])
    sp, tp = torch.cat([s, pad], 1), torch.cat([t, pad], 1)
    assert kl(sp, tp).item() == pytest.approx(kl(s, t).item(), abs=1e-7)
    p = torch.softmax(t, -1)
    entropy = -(p * p.log()).sum().item()
    assert (listnet(sp, tp) - kl(sp, tp)).item() == pytest.approx(entropy, abs=1e-6)
    # only the teacher's -inf leaves a document out: a student -inf on a document the teacher weighs is still
    # an infinite loss, which training stops on as diverged
    for loss in (kl, listnet):
        assert loss(torch.cat([s, pad], 1), torch.cat([t, torch.tensor([[0.3]])], 1)).item() == math.inf
    nan = torch.tensor([[3.0, math.nan, -1.0]])
    for loss in (kl, listnet, margin_mse, ranknet):
        assert math.isnan(loss(s, nan).item()), loss.__name__


def test_pairwise_losses_leave_out_the_pairs_of_a_document_the_teacher_scores_minus_inf():
    """margin_mse and ranknet drop every pair with a teacher -inf (padding), as kl and listnet drop the document:
    they were inf or NaN. Golden: margins s0 - s_j = [1, 1.5], t0 - t_j = [2.5, 4] -> (1.5^2 + 2.5^2) / 2 = 4.25;
    the gradient stays finite whatever the student scores the left-out document (even -inf)."""
    s = torch.tensor([[2.0, 1.0, 0.5]], requires_grad=True)
    t = torch.tensor([[3.0, 0.5, -1.0]])
    pad = torch.tensor([[-math.inf]])
    assert margin_mse(s, t).item() == pytest.approx(4.25)
    for loss, kwargs in ((margin_mse, {}), (margin_mse, {"pairs": "all_pairs"}), (ranknet, {}),
                         (ranknet, {"targets": "soft"}), (ranknet, {"ties": "include"})):
        for student_pad in (7.0, -math.inf):
            padded = loss(torch.cat([s, torch.tensor([[student_pad]])], 1), torch.cat([t, pad], 1), **kwargs)
            assert padded.item() == pytest.approx(loss(s, t, **kwargs).item(), abs=1e-7), (loss.__name__, kwargs)
            (grad,) = torch.autograd.grad(padded, s)
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0, (loss.__name__, kwargs, student_pad)
    # every document but one left out: no pair remains, the loss is 0 with a graph (a step changes nothing)
    only = torch.tensor([[0.5, -math.inf, -math.inf]])
    for loss in (margin_mse, ranknet):
        zero = loss(s, only)
        assert zero.item() == 0.0 and zero.requires_grad


# --- parity with sentence-transformers -------------------------------------------------------------------

def _as_embeddings(scores: torch.Tensor) -> list[torch.Tensor]:
    """Embeddings whose pairwise dot products are ``scores``: query = [1], document i = [s_i]."""
    q = torch.ones(scores.shape[0], 1)
    return [q] + [scores[:, i:i + 1] for i in range(scores.shape[1])]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_kl_matches_sentence_transformers_distill_kl_div(temperature):
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    g = torch.Generator().manual_seed(7)
    s = torch.randn(4, 8, generator=g).requires_grad_()
    te = torch.randn(4, 8, generator=g) * 2
    ref_fn = DistillKLDivLoss(model=None, temperature=temperature)
    s_ref = s.detach().clone().requires_grad_()
    ref = ref_fn.compute_loss_from_embeddings(_as_embeddings(s_ref), te)
    ours = kl(s, te, temperature=temperature, t2_scaling=True)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    ref.backward()
    ours.backward()
    assert torch.allclose(s.grad, s_ref.grad, atol=1e-7)
    if temperature == 1.0:  # the paper's setting: no scaling needed for parity
        assert kl(s, te).item() == pytest.approx(ref.item(), rel=1e-5)


def test_margin_mse_matches_sentence_transformers_margin_mse():
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    g = torch.Generator().manual_seed(11)
    s = torch.randn(5, 16, generator=g).requires_grad_()
    te = torch.randn(5, 16, generator=g) * 4
    s_ref = s.detach().clone().requires_grad_()
    ref = MarginMSELoss(model=None).compute_loss_from_embeddings(_as_embeddings(s_ref), te)
    ours = margin_mse(s, te)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    ref.backward()
    ours.backward()
    assert torch.allclose(s.grad, s_ref.grad, atol=1e-7)


def test_temperatures_ties_and_one_document_groups_change_the_value():
    """Found by mutation: no test used listnet or soft ranknet at T != 1 (with a uniform student a dropped
    temperature gives the same value), the tie target of ties="include" (a student margin of 0 gives ln 2
    whatever the target), or a group of one document (lce was 0)."""
    # listnet, T = 2: softmax([ln2, 0, 0]) = [1/2, 1/4, 1/4], softmax([ln3, 0, 0]) = [3/5, 1/5, 1/5];
    # L = -(3/5 ln 1/2 + 2/5 ln 1/4) = 1.4 ln 2
    assert listnet(t([[2 * LN2, 0, 0]]), t([[2 * LN3, 0, 0]]), temperature=2.0).item() == \
        pytest.approx(1.4 * LN2, abs=1e-6)
    # soft ranknet, T = 2: pairs (0,1), (0,2) with d = 1 and target sigmoid(1/2); the tied pair is dropped
    assert ranknet(t([[1, 0, 0]]), t([[2, 1, 1]]), targets="soft", temperature=2.0).item() == \
        pytest.approx(math.log1p(math.e) - 1 / (1 + math.exp(-0.5)), abs=1e-6)  # 0.6908024
    # a tie kept with target 1/2, student margin -1: softplus(-1) + 1/2
    assert ranknet(t([[0, 1]]), t([[1, 1]]), ties="include").item() == \
        pytest.approx(math.log1p(math.exp(-1)) + 0.5, abs=1e-6)  # 0.8132617
    for loss in (lce, kl, margin_mse, ranknet, listnet):
        with pytest.raises(ValueError, match="needs at least 2 documents per group"):
            loss(torch.zeros(2, 1), torch.zeros(2, 1))
