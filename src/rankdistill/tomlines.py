"""Where a key of a TOML file is written, so that an error about a key can name its line.

``tomllib`` gives values without positions, and an error such as ``'student.budget_doc' is not a key`` left
the user to search the file. :func:`key_lines` maps every key and table of a TOML text to the line it is
written on, with array-of-tables entries numbered as the config messages number them (``test[0].split`` is
the ``split`` key of the first ``[[test]]`` table); :func:`located` adds that line to an error whose message
names such a key.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from rankdistill.errors import UserInputError

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')
_HEADER = re.compile(r"^\[(\[)?\s*([^\[\]]+?)\s*\]\]?$")
_PART = r"""(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^({_PART}(?:\s*\.\s*{_PART})*)\s*=")
_NAMED = re.compile(r"'([A-Za-z_][\w\-]*(?:\[\d+\])?(?:\.[\w\-]+(?:\[\d+\])?)*)'|\[([A-Za-z_][\w\-.]*)\]")
_DECODE_LINE = re.compile(r"at line (\d+)")


def _dotted(name: str) -> str:
    """``a . "b" . c`` -> ``a.b.c`` (a quoted part keeps its dots: ``"b.c"`` stays one part)."""
    return ".".join(p.strip("\"'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', name))


def key_lines(text: str) -> dict[str, int]:
    """``{dotted key: 1-based line}`` of every key and table header of a TOML text (the first occurrence).

    Tables are keyed by their name (``teacher.train``); the ``i``-th table of an array of tables by
    ``name[i]`` (``test[0]``), its keys by ``name[i].key``. A value spanning lines (an array, a multi-line
    string) counts from the line where its key is."""
    out: dict[str, int] = {}
    table = ""
    arrays: Counter[str] = Counter()
    depth = 0  # open brackets of a value continued on the next lines
    in_string: str | None = None  # the delimiter of a multi-line string being read
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_string is not None:
            if in_string not in line:
                continue
            line = line.split(in_string, 1)[1]
            in_string = None
        for delimiter in ('"""', "'''"):
            if line.count(delimiter) % 2 == 1:
                in_string = delimiter
                line = line.split(delimiter, 1)[0]
        bare = _STRING.sub('""', line).split("#", 1)[0].strip()
        if not bare:
            continue
        if depth == 0:
            header = _HEADER.match(bare)
            if header:
                name = _dotted(header.group(2))
                if header.group(1):  # [[name]]: the next table of the array
                    table = f"{name}[{arrays[name]}]"
                    arrays[name] += 1
                else:
                    table = name
                out.setdefault(table, n)
                continue
            key = _KEY.match(line.strip())
            if key:
                out.setdefault(f"{table}.{_dotted(key.group(1))}" if table else _dotted(key.group(1)), n)
        depth = max(0, depth + bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}"))
    return out


def key_line(text: str, message: str) -> tuple[str, int] | None:
    """The first key or table that ``message`` names (``'a.b'``, ``'test[0].c'``, ``[a.b]``) and ``text``
    writes, with its line; a key's ``[i]`` item index counts as the key (``grid.seeds[2]`` is ``grid.seeds``)."""
    lines = key_lines(text)
    for match in _NAMED.finditer(message):
        name = match.group(1) or match.group(2)
        for candidate in (name, re.sub(r"\[\d+\]$", "", name)):
            if candidate in lines:
                return candidate, lines[candidate]
    return None


def located(error: UserInputError, path: Path) -> UserInputError:
    """``error`` with the line of the key it names when it is about file ``path`` and has no line yet (else
    ``error`` itself); for a TOML syntax error, the line the parser gives."""
    if error.line is not None or error.path is None or Path(error.path) != path:
        return error
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return error
    found = key_line(text, error.message)
    if found is None:
        return error
    key, line = found
    return UserInputError(error.message, path=error.path, line=line,
                          fix=error.fix or f"change '{key}' on that line")


def decode_error(error: Exception, path: Path, fix: str | None = None) -> UserInputError:
    """A ``tomllib.TOMLDecodeError`` as one line naming the file and the line the parser stopped at."""
    text = str(error)
    at = _DECODE_LINE.search(text)
    return UserInputError(f"invalid TOML ({text})", path=path, line=int(at.group(1)) if at else None,
                          fix=fix or "see https://toml.io for the syntax")
