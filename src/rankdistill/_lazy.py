"""Names a package exports from submodules that import torch or other heavy libraries, loaded on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str], eager: list[str]) -> tuple[Callable[[str], Any],
                                                                                     Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each exported name to the submodule (relative
    to ``package``) that defines it, imported when the name is first read; ``eager`` are the names the package
    imports itself. ``dir()`` and tab completion list both."""

    def getattr_(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted({*eager, *names})

    return getattr_, dir_
