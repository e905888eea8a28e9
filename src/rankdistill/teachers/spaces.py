"""Score spaces: how a cross-encoder's logits become one relevance score per (query, document) pair.

A ranking cross-encoder has either one output (a relevance logit ``z``) or two (``z_0`` "not relevant",
``z_1`` "relevant"). The space a teacher's scores live in matters to every loss and statistic built on them
(softmax entropy, MarginMSE margins), so it is chosen explicitly and recorded with the scores:

- ``logit``: one-output models: ``s = z``; two-output models: ``s = z_1`` (the raw class-1 logit).
- ``log_p_rel``: log-probability of relevance. One output: ``s = log sigmoid(z)``; two outputs:
  ``s = log softmax(z)_1 = z_1 - logsumexp(z_0, z_1)`` (the paper's teacher score, an ELECTRA 2-class model).
- ``log_odds``: two outputs: ``s = z_1 - z_0 = log P(rel) - log P(not rel)``; one output: ``s = z``.

``auto`` picks ``logit`` for one output and ``log_p_rel`` for two.
"""

from __future__ import annotations

import torch

from rankdistill.teachers.options import SCORE_SPACES


def resolve_score_space(space: str, num_labels: int) -> str:
    """The concrete space for ``space`` (``auto`` or one of :data:`SCORE_SPACES`) and a head of ``num_labels``."""
    if num_labels not in (1, 2):
        raise ValueError(f"a ranking head has 1 or 2 outputs, not {num_labels}")
    if space == "auto":
        return "logit" if num_labels == 1 else "log_p_rel"
    if space not in SCORE_SPACES:
        raise ValueError(f"unknown score space {space!r}; known: auto, {', '.join(SCORE_SPACES)}")
    return space


def scores_from_logits(logits: torch.Tensor, space: str) -> torch.Tensor:
    """Map logits ``[batch, 1]`` or ``[batch, 2]`` to scores ``[batch]`` (float32) in ``space``."""
    z = logits.float()
    if z.ndim == 1:
        z = z[:, None]
    num_labels = z.shape[-1]
    space = resolve_score_space(space, num_labels)
    if num_labels == 1:
        if space == "log_p_rel":
            return torch.nn.functional.logsigmoid(z[:, 0])
        return z[:, 0]
    if space == "logit":
        return z[:, 1]
    if space == "log_odds":
        return z[:, 1] - z[:, 0]
    return torch.log_softmax(z, dim=-1)[:, 1]
