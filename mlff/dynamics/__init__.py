"""Molecular dynamics: engines, observers, the runner."""

from mlff.dynamics.ase_engine import MDSettings, load_protocol, run_ase_md
from mlff.dynamics.observers import Observer, StabilityObserver
from mlff.dynamics.runner import load_structure, run_md

__all__ = ["MDSettings", "load_protocol", "Observer", "StabilityObserver", "load_structure", "run_ase_md", "run_md"]
