"""Molecular dynamics: settings and protocols, engines (torch, OpenMM, ASE), observers, the runner."""

from mlff.dynamics.engines import ENGINES, Engine, build_engine
from mlff.dynamics.frame import Frame
from mlff.dynamics.observers import Observer, RDFObserver, StabilityObserver
from mlff.dynamics.runner import MDInterrupted, load_structure, load_structures, run_md
from mlff.dynamics.settings import MDSettings, load_protocol, steps_for

__all__ = [
    "ENGINES",
    "Engine",
    "Frame",
    "MDInterrupted",
    "MDSettings",
    "Observer",
    "RDFObserver",
    "StabilityObserver",
    "build_engine",
    "load_protocol",
    "load_structure",
    "load_structures",
    "run_md",
    "steps_for",
]
