"""mlff: machine-learned molecular force fields.

Public API (imported on first use, so `import mlff` imports no torch):

    MLFFCalculator   ASE calculator for a potential file
    load_potential   load a potential file for inference
    __version__
"""

import importlib
from typing import TYPE_CHECKING, Any

from mlff._version import __version__

if TYPE_CHECKING:
    from mlff.calculators.ase import MLFFCalculator
    from mlff.export.load import load_potential

_LAZY: dict[str, str] = {
    "MLFFCalculator": "mlff.calculators.ase",
    "load_potential": "mlff.export.load",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["MLFFCalculator", "__version__", "load_potential"]
