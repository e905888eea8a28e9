"""The one exception type for bad input: files, configs and flags.

The CLI turns a :class:`UserInputError` into a single line on stderr and exit code 2. Messages say
*what* is wrong, *where* (file and line when known) and *how to fix it*.
"""

from __future__ import annotations

from pathlib import Path


class UserInputError(ValueError):
    """Bad input given by the user (a file, a config key, a flag); reported as one line, exit 2.

    A ``ValueError``, so that code calling the library catches it as one (a config of the wrong type, an
    unknown measure, a malformed file) without knowing this class."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 fix: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        text = f"{where}{message}"
        if fix:
            text = f"{text} ({fix})"
        super().__init__(text)
        self.message = message
        self.path = path
        self.line = line
        self.fix = fix


def unused_flags(flags: list[str], why: str, otherwise: str | None = None,
                 verb: tuple[str, str] = ("is", "are")) -> UserInputError:
    """The refusal of flags that the command would ignore, in one line: ``--a and --b are <why> (leave them
    out, or <otherwise>)``; ``verb``: the singular and plural verb before ``why``."""
    one = len(flags) == 1
    return UserInputError(f"{' and '.join(flags)} {verb[0] if one else verb[1]} {why}",
                          fix=f"leave {'it' if one else 'them'} out" + (f", or {otherwise}" if otherwise else ""))


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (a numpy one too) and not a ``bool``."""
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_field_types(config: object) -> None:
    """Raise :class:`UserInputError` naming the first field of the dataclass ``config`` whose value does not
    have its annotated scalar type (``int``, ``float``, ``str``, ``bool``, or one of them or ``None``).

    For configs built in Python rather than from flags: ``group_size="8"`` or ``seed=None`` would otherwise
    fail deep inside numpy or torch, or not at all. An ``int`` passes for a ``float``, a path for a ``str``, a
    numpy number for an ``int`` or ``float``, and each is converted in place to the plain type (so the config
    serialises to JSON as one given plainly); ``True`` is not an ``int``. Fields of other types are not
    checked here."""
    import dataclasses
    import numbers
    import os
    import types
    import typing

    try:
        hints = typing.get_type_hints(type(config))
    except (NameError, TypeError):  # an annotation that does not resolve at run time: nothing to check against
        return

    def fits(value: object, tp: object) -> bool:
        if tp is bool or isinstance(value, bool):
            return tp is bool and isinstance(value, bool)
        if tp is int:
            return is_integer(value)
        if tp is float:
            return isinstance(value, numbers.Real)
        return isinstance(value, (str, os.PathLike))

    def plain(value: object) -> object:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if is_integer(value):
            return int(value)  # type: ignore[call-overload]
        return float(value) if isinstance(value, numbers.Real) and not isinstance(value, (int, float)) else value

    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        tp = hints.get(f.name)
        members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        allowed = [a for a in members if a is not type(None)]
        optional = len(allowed) < len(members)
        value = getattr(config, f.name)
        if typing.get_origin(tp) is tuple and isinstance(value, str):  # ("bm25",) given as "bm25": per letter
            raise UserInputError(f"{type(config).__name__}.{f.name} must be a tuple, not one string: give "
                                 f"({value!r},)")
        if not allowed or any(a not in (int, float, str, bool) for a in allowed) or (value is None and optional):
            continue
        if not any(fits(value, a) for a in allowed):
            names = " or ".join([a.__name__ for a in allowed] + (["None"] if optional else []))
            raise UserInputError(f"{type(config).__name__}.{f.name} must be {names}, got {value!r}")
        if type(value) not in (int, float, str, bool):
            object.__setattr__(config, f.name, plain(value))  # frozen dataclasses too
