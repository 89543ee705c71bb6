"""Molecular dynamics: settings and protocols, engines (torch, OpenMM, ASE), observers, the runner.

Names are imported lazily, so that the engine registry (`mlff.dynamics.engines.ENGINES`) can feed
the command line's choices without importing torch.
"""

import importlib
from typing import Any

_EXPORTS = {
    "ENGINES": "mlff.dynamics.engines",
    "Engine": "mlff.dynamics.engines",
    "build_engine": "mlff.dynamics.engines",
    "Frame": "mlff.dynamics.frame",
    "ForceObserver": "mlff.dynamics.observers",
    "Observer": "mlff.dynamics.observers",
    "RDFObserver": "mlff.dynamics.observers",
    "ReplicaObserver": "mlff.dynamics.observers",
    "StabilityObserver": "mlff.dynamics.observers",
    "MDInterrupted": "mlff.dynamics.runner",
    "load_structure": "mlff.dynamics.runner",
    "load_structures": "mlff.dynamics.runner",
    "run_md": "mlff.dynamics.runner",
    "MDSettings": "mlff.dynamics.settings",
    "load_protocol": "mlff.dynamics.settings",
    "steps_for": "mlff.dynamics.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlff.dynamics' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
