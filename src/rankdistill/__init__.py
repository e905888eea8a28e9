"""rankdistill: train neural rankers with the right sampling and labelling, and measure why."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
