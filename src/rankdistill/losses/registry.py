"""A plain-dict registry of ranking losses, filled by a decorator.

>>> from rankdistill.losses import LOSSES, make_loss
>>> sorted(LOSSES)                                                          # doctest: +SKIP
['infonce', 'kl', 'lce', 'listnet', 'margin_mse', 'ranknet']
>>> loss_fn = make_loss("kl", temperature=2.0)                              # doctest: +SKIP
>>> loss_fn(student_scores, teacher_scores)                                 # doctest: +SKIP

Every loss is a pure function ``fn(student, teacher, **options) -> scalar tensor`` over scores of shape
``[B, G]`` with the positive at column 0 (``teacher`` is ``None`` for losses that need no teacher).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from rankdistill.errors import UserInputError

LossFn = Callable[..., Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its function, whether it needs teacher scores, and its keyword options."""

    name: str
    fn: LossFn
    needs_teacher: bool
    in_batch: bool
    """Whether the loss is meant for scores extended with in-batch negatives (columns beyond the group)."""
    options: tuple[str, ...]
    summary: str


LOSSES: dict[str, LossSpec] = {}
"""Registered losses by name (``lce``, ``infonce``, ``margin_mse``, ``ranknet``, ``kl``, ``listnet``)."""


def register_loss(name: str, *, needs_teacher: bool, in_batch: bool = False) -> Callable[[LossFn], LossFn]:
    """Decorator adding a loss function to :data:`LOSSES` under ``name``.

    The keyword-only parameters of the function become its options; the first line of its docstring
    becomes its summary.
    """

    def decorate(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        params = inspect.signature(fn).parameters.values()
        options = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        LOSSES[name] = LossSpec(name, fn, needs_teacher, in_batch, options, summary)
        return fn

    return decorate


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; an unknown name raises with the list of valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UserInputError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}",
                             fix="pick one with --loss") from None


def make_loss(name: str, **options: object) -> LossFn:
    """``get_loss(name).fn`` with ``options`` bound; options the loss does not take raise with the valid ones.

    Options whose value is ``None`` are treated as not given (the loss's default applies).
    """
    spec = get_loss(name)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise UserInputError(f"loss {name!r} does not take option(s) {', '.join(unknown)}; its options: {valid}",
                             fix="drop the option or choose another loss")
    return functools.partial(spec.fn, **given)
