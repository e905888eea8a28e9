"""The one exception type for bad input: files, configs and flags.

The CLI turns a :class:`UserInputError` into a single line on stderr and exit code 2. Messages say
*what* is wrong, *where* (file and line when known) and *how to fix it*.
"""

from __future__ import annotations

from pathlib import Path


class UserInputError(Exception):
    """Bad input given by the user (a file, a config key, a flag); reported as one line, exit 2."""

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
