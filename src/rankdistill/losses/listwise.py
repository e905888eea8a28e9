"""Listwise losses: softmax cross-entropy (LCE, InfoNCE), KL distillation and ListNet.

All take student scores ``s`` of shape ``[B, G]`` (query b, document i; the positive at ``i = 0``) and, where
they distil, teacher scores ``t`` of the same shape. Scores are unnormalised (logits, dot products, ...).
Each returns the mean over the ``B`` queries of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rankdistill.losses._checks import check_scores, check_temperature
from rankdistill.losses.registry import register_loss


@register_loss("lce", needs_teacher=False)
def lce(student: Tensor, teacher: Tensor | None = None) -> Tensor:
    """Localised contrastive estimation: softmax cross-entropy with the positive (index 0) as target.

    .. math:: L = -\\frac{1}{B} \\sum_b \\log \\frac{e^{s_{b,0}}}{\\sum_{i=0}^{G-1} e^{s_{b,i}}}

    Inputs: student scores ``[B, G]``; ``teacher`` is ignored (plain contrastive labels). Use it to train
    without a teacher, e.g. the teacher cross-encoder itself on BM25 negatives. Related: :func:`infonce` (the
    same with a temperature and in-batch negatives), :func:`kl` (soft labels from a teacher).

    Reference: Gao, Dai and Callan, "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline",
    ECIR 2021 (arXiv:2101.08751).
    """
    check_scores("lce", student, None, needs_teacher=False)
    target = torch.zeros(student.shape[0], dtype=torch.long, device=student.device)
    return F.cross_entropy(student.float(), target)


@register_loss("infonce", needs_teacher=False, in_batch=True)
def infonce(student: Tensor, teacher: Tensor | None = None, *, temperature: float = 1.0) -> Tensor:
    """InfoNCE: softmax cross-entropy over scores divided by a temperature, positive at index 0.

    .. math:: L = -\\frac{1}{B} \\sum_b \\log \\frac{e^{s_{b,0}/\\tau}}{\\sum_{j=0}^{N-1} e^{s_{b,j}/\\tau}}

    Inputs: student scores ``[B, N]`` where the first ``G`` columns are the query's own group (positive first)
    and, with in-batch negatives, the remaining ``N - G`` columns are the other queries' documents of the
    batch (gathered across devices under DDP). ``teacher`` is ignored. With cosine similarity use a small
    temperature (e.g. 0.05); with dot products 1.0. Related: :func:`lce` (``tau = 1``, own group only).

    References: van den Oord, Li and Vinyals, "Representation Learning with Contrastive Predictive Coding",
    arXiv:1807.03748 (2018); Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering",
    EMNLP 2020 (in-batch negatives).
    """
    check_scores("infonce", student, None, needs_teacher=False)
    check_temperature("infonce", temperature)
    target = torch.zeros(student.shape[0], dtype=torch.long, device=student.device)
    return F.cross_entropy(student.float() / temperature, target)


def _log_softmax(scores: Tensor, temperature: float, left_out: Tensor) -> Tensor:
    """``log softmax(scores / T)`` over the group, clamped at the lowest float32 where ``left_out`` (documents
    the teacher scores ``-inf``): such a document is a term ``0 log 0 = 0`` of the distillation losses rather
    than NaN (``exp(-inf) * (-inf - x)``). Elsewhere the values are untouched, so a student score of ``-inf``
    on a document the teacher weighs still gives an infinite loss (which training stops on)."""
    log_p = F.log_softmax(scores / temperature, dim=-1)
    return torch.where(left_out, log_p.clamp(min=torch.finfo(torch.float32).min), log_p)


@register_loss("kl", needs_teacher=True)
def kl(student: Tensor, teacher: Tensor, *, temperature: float = 1.0, t2_scaling: bool = False) -> Tensor:
    """Listwise distillation: KL divergence from the teacher's to the student's softmax over the group.

    .. math::
        p^t_b = \\mathrm{softmax}(t_b / T),\\quad p^s_b = \\mathrm{softmax}(s_b / T),\\quad
        L = \\frac{c}{B} \\sum_b \\sum_i p^t_{b,i} (\\log p^t_{b,i} - \\log p^s_{b,i})

    with ``c = T^2`` when ``t2_scaling`` (Hinton et al.'s gradient-magnitude correction) and ``c = 1``
    otherwise (the default, as in the paper, which uses ``T = 1`` where both agree). The reduction is
    ``batchmean`` (sum over the group, mean over queries), as ``torch.nn.KLDivLoss(reduction="batchmean")``.
    Equals sentence-transformers' ``DistillKLDivLoss(temperature=T)`` when ``t2_scaling=True`` (or ``T = 1``).

    Inputs: student and teacher scores ``[B, G]``; a document both score ``-inf`` (padding) adds nothing
    (``0 log 0 = 0``). Related: :func:`listnet` (the same gradient; the loss differs by the teacher's entropy),
    :func:`margin_mse`.

    References: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531
    (2015); Lin, Yang and Lin, "Distilling Dense Representations for Ranking using Tightly-Coupled Teachers",
    arXiv:2010.11386 (2020).
    """
    check_scores("kl", student, teacher, needs_teacher=True)
    check_temperature("kl", temperature)
    t = teacher.detach().float()
    left_out = torch.isneginf(t)
    log_ps = _log_softmax(student.float(), temperature, left_out)
    log_pt = _log_softmax(t, temperature, left_out)
    loss = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    return loss * temperature**2 if t2_scaling else loss


@register_loss("listnet", needs_teacher=True)
def listnet(student: Tensor, teacher: Tensor, *, temperature: float = 1.0) -> Tensor:
    """ListNet (top-one probabilities): cross-entropy between the teacher's and the student's softmax.

    .. math:: L = -\\frac{1}{B} \\sum_b \\sum_i \\mathrm{softmax}(t_b/T)_i \\, \\log \\mathrm{softmax}(s_b/T)_i

    Inputs: student and teacher scores ``[B, G]`` (``-inf`` for a left-out document, as in :func:`kl`). Equals
    :func:`kl` plus the teacher's softmax entropy (constant in the student), so both give the same gradients;
    ListNet's value is bounded below by that entropy, not by 0.

    Reference: Cao, Qin, Liu, Tsai and Li, "Learning to Rank: From Pairwise Approach to Listwise Approach",
    ICML 2007.
    """
    check_scores("listnet", student, teacher, needs_teacher=True)
    check_temperature("listnet", temperature)
    t = teacher.detach().float()
    pt = F.softmax(t / temperature, dim=-1)
    log_ps = _log_softmax(student.float(), temperature, torch.isneginf(t))
    return -(pt * log_ps).sum(dim=-1).mean()
