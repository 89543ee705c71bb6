"""Compiled MD: the torch engine with its potential call traced into one static graph and compiled.

`CompiledForces` is a `ForceFn` over a fixed batch of isolated molecules. The neighbour search
has a fixed capacity (`EnergyModel.energy_forces_padded`: candidates built once from the batch,
a padded pair list, a ghost atom), so every shape depends on the batch alone: `make_fx` traces
energy and forces (the autograd backward included) into one graph, and `torch.compile` compiles
it (inductor; on CUDA `mode="reduce-overhead"` replays it as a CUDA graph, re-captured when the
batch changes, i.e. when a replica is dropped). No call copies anything to the host: the pair
count is kept on the device and read once per `advance` (a saved frame), where an overflow makes
the engine grow the capacity and repeat the steps since the last frame.

`CompiledTorchEngine` ("torch-compiled" in the engine registry) is the torch engine with this
force function. TorchScript modules cannot be traced, so it rebuilds the eager model from the
potential file (`mlff.export.deploy.eager_model_from_file`); an AOTInductor package is compiled
already and runs as it is (its own neighbour search, not CUDA-graph safe).
"""

from collections.abc import Sequence
from dataclasses import replace

import torch
from ase import Atoms

from mlff.dynamics.settings import MDSettings
from mlff.dynamics.torch_engine import BatchedPotential, TorchEngine
from mlff.export.load import Potential

# Capacity growth on overflow: the count seen times this, so that a slowly compressing batch
# does not re-trace every frame.
CAPACITY_GROWTH = 1.25


class CompiledForces:
    """positions [N, 3] Angstrom -> (energy [B] eV, forces [N, 3] eV/A) through one compiled static graph.

    Args:
        model: an eval-mode `EnergyModel` (or `CommitteeModel`: the members' mean) on the device, in the
            network dtype.
        atomic_numbers: [N] long. batch: [N] long, non-decreasing (checked by the caller).
        fallback: [N, 3] Angstrom, coordinates used in place of non-finite ones (as `BatchedPotential`).
        capacity: neighbour pairs kept per call (None: every candidate pair, which never overflows).
        mode: `torch.compile` mode (None: "reduce-overhead", CUDA graphs, on CUDA; the default elsewhere).
        compile: False runs the traced graph uncompiled (the eager reference of the tests).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        fallback: torch.Tensor,
        capacity: int | None = None,
        mode: str | None = None,
        compile: bool = True,
    ) -> None:
        from mlff.models.neighbors import structure_pairs

        self.model = model
        scale = model.members[0].energy_scale if hasattr(model, "members") else model.energy_scale
        self.device = scale.device
        self.dtype = scale.dtype
        self.atomic_numbers = atomic_numbers.to(self.device)
        self.batch = batch.to(self.device)
        self.num_systems = int(batch.max()) + 1 if batch.numel() else 0
        self.fallback = fallback.to(device=self.device, dtype=torch.float64)
        self.candidates = structure_pairs(self.batch, self.num_systems)
        self.capacity = min(capacity or self.candidates.size(1), self.candidates.size(1))
        self.mode = mode if mode is not None else ("reduce-overhead" if self.device.type == "cuda" else None)
        self.compile = compile
        self.seconds = None
        self.largest_count = torch.zeros((), dtype=torch.long, device=self.device)
        self._trace()

    def _trace(self) -> None:
        """Trace energy and forces at this capacity into a graph and compile it."""
        from torch.fx.experimental.proxy_tensor import make_fx

        def energy_forces(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self.model.energy_forces_padded(
                positions, self.atomic_numbers, self.batch, self.num_systems, self.candidates, self.capacity
            )

        graph = make_fx(energy_forces)(self.fallback.to(self.dtype))
        self.graph = torch.compile(graph, dynamic=False, mode=self.mode) if self.compile else graph

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        safe = torch.where(torch.isfinite(positions), positions, self.fallback)
        energy, forces, count = self.graph(safe.to(self.dtype))
        self.largest_count = torch.maximum(self.largest_count, count)
        return energy.to(positions.dtype), forces.to(positions.dtype)

    def overflowed(self) -> bool:
        """Whether some call since the last `reset` found more pairs than the capacity (reads the device)."""
        return int(self.largest_count) > self.capacity

    def grow(self) -> None:
        """Raise the capacity above the largest count seen, re-trace, and clear the count."""
        self.capacity = min(int(CAPACITY_GROWTH * int(self.largest_count)) + 1, self.candidates.size(1))
        self.largest_count.zero_()
        self._trace()


class CompiledTorchEngine(TorchEngine):
    """The torch engine stepping through `CompiledForces` (isolated molecules; same integrators).

    Args:
        potential: a TorchScript potential file loaded by `load_potential` (its eager model is
            rebuilt from the file and compiled) or an AOTInductor package (run as it is).
        systems, settings: as `TorchEngine`.
        capacity: neighbour pairs kept per call (None: all candidate pairs).
        compile: False traces without compiling (the reference for tests).
    """

    name = "torch-compiled"

    def __init__(
        self,
        potential: Potential,
        systems: Sequence[Atoms],
        settings: MDSettings,
        capacity: int | None = None,
        compile: bool = True,
    ) -> None:
        self.capacity = capacity
        self.compile = compile
        self.model = None
        if potential.metadata.get("container") != "aoti":
            from mlff.export.deploy import eager_model_from_file

            if potential.path is None:
                raise ValueError("the compiled engine rebuilds the model from its file: load the potential from a file")
            model = eager_model_from_file(potential.path).to(device=potential.device, dtype=potential.dtype)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            self.model = model
        super().__init__(potential, systems, settings)

    def _force_function(self, numbers: torch.Tensor, batch: torch.Tensor, start: torch.Tensor):  # type: ignore[override]
        if self.model is None:
            return BatchedPotential(self.potential, numbers, batch, start, timed=False)
        # The one input check of the run, on the module's device (the replicas' tensors are built on the CPU).
        device, dtype = self.potential.device, self.potential.dtype
        cell = torch.zeros(int(batch.max()) + 1, 3, 3, dtype=dtype, device=device)
        pbc = torch.zeros(cell.size(0), 3, dtype=torch.bool, device=device)
        self.potential.check_inputs(
            start.to(device=device, dtype=dtype), numbers.to(device), batch.to(device), cell, pbc
        )
        return CompiledForces(self.model, numbers, batch, start, self.capacity, compile=self.compile)

    def advance(self, steps: int) -> None:
        """Integrate `steps` steps; if the pair capacity overflowed meanwhile, grow it and repeat them."""
        if not isinstance(self.force_fn, CompiledForces):
            super().advance(steps)
            return
        state = self.state
        super().advance(steps)
        while self.force_fn.overflowed():
            # The Langevin noise is a function of the step, so the repeat draws the same numbers.
            self.force_fn.grow()
            self.capacity = self.force_fn.capacity
            energy, forces = self.force_fn(state.positions)
            self.state = replace(state, forces=forces, potential_energy=energy)
            super().advance(steps)
