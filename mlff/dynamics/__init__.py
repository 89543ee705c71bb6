"""Molecular dynamics: engines, observers, the runner."""

from mlff.dynamics.ase_engine import MDSettings, load_protocol, run_ase_md
from mlff.dynamics.observers import Observer, StabilityObserver
from mlff.dynamics.runner import load_structure, run_md
from mlff.dynamics.torch_engine import MDState, run_torch_md

__all__ = [
    "MDSettings",
    "MDState",
    "Observer",
    "StabilityObserver",
    "load_protocol",
    "load_structure",
    "run_ase_md",
    "run_md",
    "run_torch_md",
]
