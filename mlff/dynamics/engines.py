"""MD engines behind one interface (`Engine`) and a registry.

An engine advances R replicas (one `ase.Atoms` each, any mix of molecules) under one
`MDSettings`, and keeps its own integrator: the torch engine steps plain state with pure
functions, the ASE and OpenMM engines wrap their libraries' integrators. Adding an engine: write
the class (constructor `(potential, systems, settings)`), add one line to `ENGINES`.
"""

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    # ASE and the frame/settings types only annotate: the registry imports nothing heavy (the CLI's
    # parser reads it).
    from ase import Atoms

    from mlff.dynamics.frame import Frame
    from mlff.dynamics.settings import MDSettings

ENGINES: dict[str, str] = {
    "torch": "mlff.dynamics.torch_engine:TorchEngine",
    "ase": "mlff.dynamics.ase_engine:ASEEngine",
    "openmm": "mlff.dynamics.openmm_engine:OpenMMEngine",
    "torch-compiled": "mlff.dynamics.compiled:CompiledTorchEngine",
    "torch-sim": "mlff.dynamics.torchsim:TorchSimEngine",
}


class Engine(Protocol):
    """Advances the active replicas; shows them as a `Frame`; saves and restores itself.

    Attributes:
        name: the registry key.
        replicas: indices of the replicas still integrated.
        step: integration steps taken (the same for every active replica).
        potential_seconds: wall time inside the potential so far, or None where the engine
            cannot separate it (OpenMM's C++ loop).
    """

    name: str
    replicas: list[int]

    @property
    def step(self) -> int: ...

    @property
    def potential_seconds(self) -> float | None: ...

    def advance(self, steps: int) -> None: ...

    def frame(self) -> "Frame": ...

    def drop(self, replicas: Sequence[int]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, saved: dict[str, Any]) -> None: ...


def build_engine(name: str, potential: Any, systems: "Sequence[Atoms]", settings: "MDSettings") -> Engine:
    """The engine `name` over `systems` (replica k starts from systems[k], seeded settings.seed + k)."""
    if name not in ENGINES:
        raise ValueError(f"unknown MD engine {name!r}; known: {sorted(ENGINES)}")
    module_name, _, class_name = ENGINES[name].partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(potential, systems, settings)
