"""Names a package exports from submodules that import torch or other heavy libraries, loaded on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str], namespace: Mapping[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each exported name to the submodule (relative
    to ``package``) that defines it, imported when the name is first read; ``namespace`` is the package's
    ``globals()``. ``dir()`` and tab completion list both (the package's submodules included)."""

    def getattr_(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted({*namespace, *names})

    return getattr_, dir_
