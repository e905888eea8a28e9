"""Pairwise losses: MarginMSE and RankNet over the documents of each group.

Inputs are student scores ``s`` and teacher scores ``t`` of shape ``[B, G]``, positive at index 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rankdistill.losses._checks import check_scores, check_temperature
from rankdistill.losses.registry import register_loss

MARGIN_PAIRS = ("pos_vs_negs", "all_pairs")
RANKNET_TARGETS = ("sign", "soft")
RANKNET_TIES = ("exclude", "include")


def _upper_pairs(g: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index vectors ``(i, j)`` of all pairs ``i < j`` of a group of ``g`` documents."""
    return torch.triu_indices(g, g, offset=1, device=device).unbind(0)


def _pairs_kept(t: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """Mask ``[B, P]`` of the pairs ``(i, j)`` in which neither document is left out (teacher score ``-inf``,
    padding, as in :func:`~rankdistill.losses.listwise.kl`)."""
    left_out = torch.isneginf(t)
    return ~(left_out[:, i] | left_out[:, j])


def _mean_kept(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` over the pairs ``keep`` marks; 0 (with the graph) when none is. ``values`` must be
    finite where ``keep`` is false. No branch on the data, so no device synchronisation."""
    return values.masked_fill(~keep, 0.0).sum() / keep.sum().clamp(min=1)


@register_loss("margin_mse", needs_teacher=True)
def margin_mse(student: Tensor, teacher: Tensor, *, pairs: str = "pos_vs_negs") -> Tensor:
    """MarginMSE: mean squared error between student and teacher score margins.

    ``pairs="pos_vs_negs"`` (default; Hofstätter et al., and sentence-transformers' ``MarginMSELoss``)::

        L = 1/(B (G-1)) * sum_b sum_{j=1..G-1} ((s_b0 - s_bj) - (t_b0 - t_bj))^2

    ``pairs="all_pairs"``: every pair ``i < j`` of the group, not only those with the positive::

        L = 1/(B * G(G-1)/2) * sum_b sum_{i<j} ((s_bi - s_bj) - (t_bi - t_bj))^2

    Inputs: student and teacher scores ``[B, G]`` (teacher scores, not margins). The loss is invariant to a
    per-query shift of either score vector, so the teacher's score space (logits, log-probabilities) matters
    only through its scale. A document the teacher scores ``-inf`` (padding) is left out: the mean runs over
    the pairs without it (a batch with none gives 0). Related: :func:`ranknet` (uses only the sign of teacher
    margins), :func:`kl`.

    Reference: Hofstätter, Althammer, Schröder, Sertkan and Hanbury, "Improving Efficient Neural Ranking Models
    with Cross-Architecture Knowledge Distillation", arXiv:2010.02666 (2020).
    """
    check_scores("margin_mse", student, teacher, needs_teacher=True)
    s, t = student.float(), teacher.detach().float()
    if pairs == "pos_vs_negs":
        j = torch.arange(1, s.shape[1], device=s.device)
        i = torch.zeros_like(j)
    elif pairs == "all_pairs":
        i, j = _upper_pairs(s.shape[1], s.device)
    else:
        raise ValueError(f"margin_mse: pairs must be one of {', '.join(MARGIN_PAIRS)}, got {pairs!r}")
    keep = _pairs_kept(t, i, j)
    # zero the left-out pairs before squaring: their inf/NaN would otherwise reach the gradient (0 * inf)
    ds = (s[:, i] - s[:, j]).masked_fill(~keep, 0.0)
    dt = (t[:, i] - t[:, j]).masked_fill(~keep, 0.0)
    return _mean_kept((ds - dt) ** 2, keep)


@register_loss("ranknet", needs_teacher=True)
def ranknet(student: Tensor, teacher: Tensor, *, targets: str = "sign", ties: str = "exclude",
            temperature: float = 1.0) -> Tensor:
    """RankNet: logistic loss on student score differences, with targets from the teacher's preferences.

    For each query ``b`` and pair ``i < j`` of its group, with ``d = s_bi - s_bj``::

        y_bij = 1[t_bi > t_bj]                       (targets="sign", the paper's variant)
        y_bij = sigmoid((t_bi - t_bj) / T)           (targets="soft")
        l_bij = -y log sigmoid(d) - (1 - y) log(1 - sigmoid(d))  = softplus(d) - y d

    ``L`` is the mean of ``l_bij`` over the pairs kept. With ``ties="exclude"`` (default) pairs whose teacher
    scores are equal are dropped (with ``"include"`` they get target 1/2); so is every pair with a document the
    teacher scores ``-inf`` (padding, as in :func:`~rankdistill.losses.listwise.kl`). A batch with no pair kept
    gives 0.
    Inputs: student and teacher scores ``[B, G]``; ``temperature`` applies to ``targets="soft"`` only.

    Reference: Burges, Shaked, Renshaw, Lazier, Deeds, Hamilton and Hullender, "Learning to Rank using
    Gradient Descent", ICML 2005.
    """
    check_scores("ranknet", student, teacher, needs_teacher=True)
    check_temperature("ranknet", temperature)
    if targets not in RANKNET_TARGETS:
        raise ValueError(f"ranknet: targets must be one of {', '.join(RANKNET_TARGETS)}, got {targets!r}")
    if ties not in RANKNET_TIES:
        raise ValueError(f"ranknet: ties must be one of {', '.join(RANKNET_TIES)}, got {ties!r}")
    s, t = student.float(), teacher.detach().float()
    i, j = _upper_pairs(s.shape[1], s.device)
    ds = s[:, i] - s[:, j]
    dt = t[:, i] - t[:, j]
    if targets == "sign":
        y = (dt > 0).float() + 0.5 * (dt == 0).float()
    else:
        y = torch.sigmoid(dt / temperature)
    y = torch.where(torch.isnan(dt), dt, y)  # a NaN teacher score gives a NaN loss, as in the other losses
    keep = _pairs_kept(t, i, j)
    # left-out pairs become a finite dummy, so that their inf/NaN cannot reach the gradient
    losses = F.binary_cross_entropy_with_logits(ds.masked_fill(~keep, 0.0), y.masked_fill(~keep, 0.5),
                                                reduction="none")
    if ties == "exclude":
        keep = keep & (dt != 0)
    return _mean_kept(losses, keep)
