"""Shape checks shared by the losses, with messages that say what to pass instead."""

from __future__ import annotations

from torch import Tensor


def check_scores(name: str, student: Tensor, teacher: Tensor | None, *, needs_teacher: bool,
                 min_group: int = 2) -> None:
    """Raise ``ValueError`` unless ``student`` is ``[B, G]`` (``B >= 1``, ``G >= min_group``) and ``teacher``
    matches it (``TypeError`` for what is not a tensor)."""
    for what, value in (("student", student), ("teacher", teacher)):
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"{name}: {what} scores must be a torch.Tensor of shape [batch, group], got "
                            f"{type(value).__name__} (wrap it with torch.as_tensor)")
    if student.dim() != 2:
        raise ValueError(f"{name}: student scores must have shape [batch, group], got {tuple(student.shape)}")
    if student.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (student scores of shape {tuple(student.shape)})")
    if student.shape[1] < min_group:
        raise ValueError(f"{name}: needs at least {min_group} documents per group (positive first), "
                         f"got {student.shape[1]}")
    if needs_teacher:
        if teacher is None:
            raise ValueError(f"{name}: needs teacher scores of shape {tuple(student.shape)}, got None")
        if teacher.shape != student.shape:
            raise ValueError(f"{name}: teacher scores have shape {tuple(teacher.shape)} but student scores "
                             f"{tuple(student.shape)}; give one teacher score per (query, document) of the group")


def check_temperature(name: str, temperature: float) -> None:
    try:  # a number of any kind (a numpy float, a 0-d tensor), not a string or a bool
        ok = not isinstance(temperature, (bool, str)) and bool(0 < temperature < float("inf"))
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: temperature must be a positive finite number, got {temperature!r}")
