"""Calculators for other simulation packages, on top of a potential file.

Each calculator lives in its own module and is imported on first use, so
importing this package imports neither torch nor any simulation package.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlff.calculators.ase import MLFFCalculator

_LAZY: dict[str, str] = {"MLFFCalculator": "mlff.calculators.ase"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlff.calculators' has no attribute {name!r}")


__all__ = ["MLFFCalculator"]
