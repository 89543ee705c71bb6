"""mlff potentials in torch-sim (`torch-sim-atomistic`, the optional extra `mlff[torchsim]`).

`MLFFModel` is a torch-sim model (its `ModelInterface`): any loaded potential (TorchScript file or
AOTInductor package) evaluated on a torch-sim state. `TorchSimEngine` ("torch-sim" in the engine
registry) runs torch-sim's own integrators with it, so `mlff bench md` times torch-sim beside
mlff's engines: velocity Verlet for "nve", torch-sim's Langevin for "langevin".

torch-sim works in metal units as ASE does: Angstrom, eV, amu and the time unit
sqrt(amu Angstrom^2 / eV) = 1 / ase.units.fs fs; momenta in amu Angstrom per that unit.
The extra pins torch-sim-atomistic 0.3.0, the last release that installs on Python 3.11 (0.4+ needs
3.12), which runs on 3.12 too; this module is written against the 0.3 API
(`torch_sim.integrators.nve`, `nvt_langevin`, `MDState`).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms, units

from mlff.dynamics.frame import Frame
from mlff.dynamics.replicas import masses_of, replica_generators
from mlff.dynamics.settings import MDSettings
from mlff.dynamics.thermo import kinetic_energy_ev_batch, maxwell_boltzmann_velocities, temperature_k_batch
from mlff.export.load import Potential
from mlff.units import BOLTZMANN_EV_PER_K


def _torch_sim() -> Any:
    """The torch_sim module, or an ImportError saying how to install it."""
    try:
        import torch_sim
    except ImportError as error:
        raise ImportError("the torch-sim engine needs torch-sim-atomistic: pip install 'mlff[torchsim]'") from error
    return torch_sim


def model_class() -> type:
    """`MLFFModel`, defined on first use so that importing this module needs no torch-sim."""
    global _MODEL_CLASS
    if _MODEL_CLASS is None:
        from torch_sim.models.interface import ModelInterface

        class MLFFModel(ModelInterface):
            """A loaded mlff potential as a torch-sim model: state -> {"energy" [B] eV, "forces" [N, 3] eV/A}.

            Isolated molecules (the state's pbc false) or periodic structures with a TorchScript file;
            no stress. The potential's input checks run when the batch layout changes, not every step.
            """

            def __init__(self, potential: Potential, dtype: torch.dtype = torch.float64) -> None:
                super().__init__()
                self.potential = potential
                self._device = potential.device
                self._dtype = dtype
                self._compute_forces = True
                self._compute_stress = False
                self._checked: tuple[int, ...] | None = None

            def forward(self, state: Any, **_: Any) -> dict[str, torch.Tensor]:
                positions = state.positions.to(self.potential.dtype)
                numbers = state.atomic_numbers.long()
                batch = state.system_idx.long()
                cell = state.cell.to(self.potential.dtype)
                # torch-sim 0.3 keeps cell vectors as columns; mlff's rows.
                cell = cell.transpose(1, 2)
                pbc = torch.full((cell.size(0), 3), bool(state.pbc), dtype=torch.bool, device=cell.device)
                layout = (positions.size(0), cell.size(0))
                if self._checked != layout:
                    self.potential.check_inputs(positions, numbers, batch, cell, pbc)
                    self._checked = layout
                energy, forces = self.potential(positions, numbers, batch, cell, pbc, check=False)
                return {"energy": energy.to(self._dtype), "forces": forces.to(self._dtype)}

        _MODEL_CLASS = MLFFModel
    return _MODEL_CLASS


_MODEL_CLASS: type | None = None


def mlff_model(potential: Potential, dtype: torch.dtype = torch.float64) -> Any:
    """The potential as a torch-sim model (`torch_sim.models.interface.ModelInterface`)."""
    _torch_sim()
    return model_class()(potential, dtype)


class TorchSimEngine:
    """R replicas advanced by torch-sim's integrators with an mlff potential (the `Engine` interface).

    Initial velocities are mlff's (`maxwell_boltzmann_velocities`, replica k seeded seed + k), so
    an NVE run starts where the torch engine's does. Langevin noise is torch-sim's own (seeded).
    """

    name = "torch-sim"

    def __init__(self, potential: Potential, systems: Sequence[Atoms], settings: MDSettings) -> None:
        ts = _torch_sim()
        from torch_sim.integrators.md import MDState

        if settings.thermostat not in ("nve", "langevin"):
            raise ValueError(f"the torch-sim engine runs nve or langevin, not {settings.thermostat!r}")
        self.potential = potential
        self.settings = settings
        self.replicas = list(range(len(systems)))
        self.counts = [len(atoms) for atoms in systems]
        device, dtype = potential.device, torch.float64
        numbers = [np.asarray(atoms.get_atomic_numbers()) for atoms in systems]
        generators = replica_generators([settings.seed + k for k in self.replicas])
        velocities = np.concatenate(
            [maxwell_boltzmann_velocities(masses_of(z), settings.temperature_k, g) for z, g in zip(numbers, generators)]
        )
        masses = torch.as_tensor(np.concatenate([masses_of(z) for z in numbers]), dtype=dtype, device=device)
        positions = torch.as_tensor(np.concatenate([a.get_positions() for a in systems]), dtype=dtype, device=device)
        batch = torch.repeat_interleave(torch.arange(len(systems)), torch.as_tensor(self.counts)).to(device)
        self.model = mlff_model(potential, dtype)
        state = ts.SimState(
            positions=positions,
            masses=masses,
            cell=torch.zeros(len(systems), 3, 3, dtype=dtype, device=device),
            pbc=False,
            atomic_numbers=torch.as_tensor(np.concatenate(numbers), device=device),
            system_idx=batch,
        )
        output = self.model(state)
        timestep = torch.tensor(settings.timestep_fs * units.fs, dtype=dtype, device=device)
        temperature = torch.tensor(BOLTZMANN_EV_PER_K * settings.temperature_k, dtype=dtype, device=device)
        if settings.thermostat == "nve":
            _, self._update = ts.nve(self.model, dt=timestep, kT=temperature)
        else:
            gamma = torch.tensor(settings.friction_per_fs / units.fs, dtype=dtype, device=device)
            _, self._update = ts.nvt_langevin(self.model, dt=timestep, kT=temperature, gamma=gamma, seed=settings.seed)
        momenta = masses[:, None] * torch.as_tensor(velocities, dtype=dtype, device=device) / units.fs
        self.state = MDState(
            positions=positions,
            masses=masses,
            cell=state.cell,
            pbc=False,
            atomic_numbers=state.atomic_numbers,
            system_idx=batch,
            momenta=momenta,
            energy=output["energy"],
            forces=output["forces"],
        )
        self._step = 0

    @property
    def step(self) -> int:
        return self._step

    @property
    def potential_seconds(self) -> None:
        return None

    def velocities(self) -> torch.Tensor:
        """[N, 3] Angstrom/fs."""
        return self.state.momenta / self.state.masses[:, None] * units.fs

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self.state = self._update(self.state)
        self._step += steps

    def frame(self) -> Frame:
        state = self.state
        positions = state.positions.cpu().numpy()
        forces = state.forces.cpu().numpy()
        bounds = np.cumsum([0, *self.counts])
        velocities = self.velocities()
        num = len(self.counts)
        return Frame(
            step=self._step,
            time_fs=self._step * self.settings.timestep_fs,
            replicas=list(self.replicas),
            positions_a=[positions[bounds[b] : bounds[b + 1]] for b in range(num)],
            forces_ev_per_a=[forces[bounds[b] : bounds[b + 1]] for b in range(num)],
            potential_energy_ev=state.energy.cpu().numpy(),
            kinetic_energy_ev=kinetic_energy_ev_batch(state.masses, velocities, state.system_idx, num).cpu().numpy(),
            temperature_k=temperature_k_batch(state.masses, velocities, state.system_idx, num).cpu().numpy(),
        )

    def drop(self, replicas: Sequence[int]) -> None:
        raise NotImplementedError("the torch-sim engine keeps its batch: use it for throughput, not stability runs")

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError("the torch-sim engine does not save its state")

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        raise NotImplementedError("the torch-sim engine does not save its state")
