"""MD in torch: a batch of molecules (replicas of one, or different ones) advanced together,
one potential call per step for the whole batch.

The state is plain data (`MDState`, tensors in the flat layout of the potential file: N atoms
of B systems, `batch` [N] the system of each atom) and a step is a pure function of the state,
its parameters and, for Langevin, each system's seed (JAX-MD style).

Units: positions Angstrom, velocities Angstrom/fs, forces eV/Angstrom, energies eV, masses
amu, time fs. An acceleration F/m in eV/(Angstrom amu) is
F/m * EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 Angstrom/fs^2 (`mlff.units`), written `C` below.

Integrators (dt the time step, a = C F / m):

* velocity Verlet (NVE): v += a dt/2; x += v dt; a = a(x); v += a dt/2.
* BAOAB Langevin (Leimkuhler & Matthews 2013), friction gamma (1/fs), temperature T (K):
  B: v += a dt/2; A: x += v dt/2;
  O: v = c1 v + sqrt(1 - c1^2) sqrt(C k_B T / m) xi, c1 = exp(-gamma dt), xi ~ N(0, 1) a
  function of (system seed, step, atom, component) (`mlff.dynamics.noise`), then each system's
  centre-of-mass velocity is removed (as ASE's FixCom); A: x += v dt/2; a = a(x); B: v += a dt/2.
* Nose-Hoover, one thermostat per system (chain length 1), as MDsim's NoseHoover (Fu et al.
  2022; the Frenkel & Smit scheme), thermostat variable zeta (1/fs), mass
  Q = 3 n k_B T (ttime dt)^2 (eV fs^2), target kinetic energy K0 = (3n - 3) k_B T / 2 (the
  degrees of freedom of the reported temperature; MDsim uses 3n):
  x += v dt + (a - zeta v) dt^2/2; K = KE(v); v' = v + (a - zeta v) dt/2; a = a(x);
  zeta += dt/2 (K - K0)/Q; zeta += dt/2 (KE(v') - K0)/Q; v = (v' + a dt/2) / (1 + zeta dt/2).
  Here dzeta/dt = (KE - K0)/Q is already in 1/fs^2 (eV over eV fs^2): no unit factor.

Replica k of a run draws its initial velocities from its own generator seeded seed + k, and its
noise is keyed by seed + k, so its trajectory is the same whether it runs alone or in a batch.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms

from mlff.dynamics.frame import Frame, kept
from mlff.dynamics.noise import counter_normal, element_counters, replica_keys
from mlff.dynamics.replicas import masses_of, replica_generators
from mlff.dynamics.settings import MDSettings
from mlff.dynamics.thermo import (
    centre_of_mass_velocity,
    kinetic_energy_ev_batch,
    maxwell_boltzmann_velocities,
    system_sum,
    temperature_k_batch,
    thermal_speed,
)
from mlff.export.load import Potential
from mlff.units import BOLTZMANN_EV_PER_K, EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2

ForceFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""positions [N, 3] Angstrom -> (potential energy [B] eV, forces [N, 3] eV/Angstrom)."""

StepFn = Callable[["MDState"], "MDState"]


@dataclass(frozen=True)
class MDState:
    """The state of B molecular systems, N atoms in all.

    Attributes:
        positions: [N, 3] Angstrom.
        velocities: [N, 3] Angstrom/fs.
        forces: [N, 3] eV/Angstrom, at `positions`.
        potential_energy: [B] eV, at `positions`.
        masses: [N] amu.
        batch: [N] long, the system of each atom (non-decreasing).
        thermostat_xi: [B] Nose-Hoover thermostat variable, 1/fs (zero for other integrators).
        step: integration steps taken.
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    potential_energy: torch.Tensor
    masses: torch.Tensor
    batch: torch.Tensor
    thermostat_xi: torch.Tensor
    step: int = 0

    @property
    def num_systems(self) -> int:
        return self.potential_energy.shape[0]

    def accelerations(self) -> torch.Tensor:
        """[N, 3] Angstrom/fs^2."""
        return self.forces / self.masses[:, None] * EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2

    def kinetic_energy(self) -> torch.Tensor:
        """[B] eV, centre-of-mass motion removed."""
        return kinetic_energy_ev_batch(self.masses, self.velocities, self.batch, self.num_systems)

    def temperature(self) -> torch.Tensor:
        """[B] K (`mlff.dynamics.thermo.temperature_k_batch`)."""
        return temperature_k_batch(self.masses, self.velocities, self.batch, self.num_systems)


class BatchedPotential:
    """A potential evaluating a fixed batch of systems in one call (a `ForceFn`).

    The batch, cell and pbc tensors are built, and the potential's input checks run, once: each
    step then calls the unchecked path (the checks read values, a GPU synchronisation each). With
    `timed` (the default) each call waits for the GPU to time itself (`seconds`); without, no call
    synchronises and `seconds` stays None. Non-finite coordinates (a replica that blew
    up between two saved frames) are replaced by the system's start coordinates before the call,
    so that one exploded replica cannot stop the batch: its own garbage is caught by the stability
    observer at the next saved frame. `seconds` accumulates the wall time spent in the potential.
    """

    def __init__(
        self,
        potential: Potential,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        fallback: torch.Tensor,
        timed: bool = True,
        cell: torch.Tensor | None = None,
        pbc: torch.Tensor | None = None,
    ):
        self.potential = potential
        self.timed = timed
        device, dtype = potential.device, potential.dtype
        self.num_atoms = int(atomic_numbers.shape[0])
        self.num_systems = int(batch.max()) + 1 if self.num_atoms else 0
        self.atomic_numbers = atomic_numbers.to(device=device, dtype=torch.long)
        self.batch = batch.to(device)
        self.fallback = fallback.to(device=device, dtype=torch.float64)
        # Periodic systems: cell [B, 3, 3] Angstrom and pbc [B, 3]; the potential finds the images.
        zeros = torch.zeros(self.num_systems, 3, 3, dtype=dtype, device=device)
        self.cell = zeros if cell is None else cell.to(device=device, dtype=dtype)
        self.pbc = torch.zeros(self.num_systems, 3, dtype=torch.bool, device=device) if pbc is None else pbc.to(device)
        self.seconds: float | None = 0.0 if timed else None
        if self.num_atoms:
            potential.check_inputs(self.fallback.to(dtype), self.atomic_numbers, self.batch, self.cell, self.pbc)

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [N, 3] Angstrom -> (energy [B] eV, forces [N, 3] eV/Angstrom), in positions' dtype."""
        if positions.shape != (self.num_atoms, 3):
            raise ValueError(f"expected positions [{self.num_atoms}, 3], got {list(positions.shape)}")
        started = time.perf_counter()
        safe = torch.where(torch.isfinite(positions), positions, self.fallback)
        energy, forces = self.potential(
            safe.to(self.potential.dtype), self.atomic_numbers, self.batch, self.cell, self.pbc, check=False
        )
        if self.seconds is not None:
            if positions.device.type == "cuda":
                torch.cuda.synchronize(positions.device)
            self.seconds += time.perf_counter() - started
        return energy.to(positions.dtype), forces.to(positions.dtype)


def velocity_verlet_step(state: MDState, force_fn: ForceFn, timestep_fs: float) -> MDState:
    """One velocity-Verlet (NVE) step of `timestep_fs` fs."""
    half = 0.5 * timestep_fs
    velocities = state.velocities + half * state.accelerations()
    positions = state.positions + timestep_fs * velocities
    energy, forces = force_fn(positions)
    moved = replace(state, positions=positions, forces=forces, potential_energy=energy, step=state.step + 1)
    return replace(moved, velocities=velocities + half * moved.accelerations())


def baoab_langevin_step(
    state: MDState,
    force_fn: ForceFn,
    keys: torch.Tensor,
    counters: torch.Tensor,
    timestep_fs: float,
    temperature_k: float,
    friction_per_fs: float,
) -> MDState:
    """One BAOAB Langevin step (friction 1/fs, temperature K); the noise keyed by each system's key
    ([B, 2] `replica_keys`), the step and each atom's counters ([N, 3, 2] `element_counters`)."""
    half = 0.5 * timestep_fs
    c1 = float(np.exp(-friction_per_fs * timestep_fs))
    sigma = thermal_speed(state.masses, temperature_k)[:, None]
    velocities = state.velocities + half * state.accelerations()
    positions = state.positions + half * velocities
    noise = counter_normal(keys, state.step, state.batch, counters, state.positions.dtype)
    velocities = c1 * velocities + float(np.sqrt(1.0 - c1**2)) * sigma * noise
    velocities = velocities - centre_of_mass_velocity(state.masses, velocities, state.batch, state.num_systems)
    positions = positions + half * velocities
    energy, forces = force_fn(positions)
    moved = replace(state, positions=positions, forces=forces, potential_energy=energy, step=state.step + 1)
    return replace(moved, velocities=velocities + half * moved.accelerations())


def nose_hoover_mass(num_atoms: torch.Tensor, temperature_k: float, timestep_fs: float, ttime: float) -> torch.Tensor:
    """Thermostat masses Q [B] = 3 n k_B T (ttime dt)^2 in eV fs^2 (MDsim's NoseHoover), n [B] atoms."""
    return 3.0 * num_atoms * BOLTZMANN_EV_PER_K * temperature_k * (ttime * timestep_fs) ** 2


def nose_hoover_step(
    state: MDState, force_fn: ForceFn, timestep_fs: float, temperature_k: float, ttime: float
) -> MDState:
    """One Nose-Hoover step (chain length 1; the module docstring gives the equations)."""
    dt, half = timestep_fs, 0.5 * timestep_fs
    atoms = system_sum(torch.ones_like(state.masses), state.batch, state.num_systems)
    mass_q = nose_hoover_mass(atoms, temperature_k, dt, ttime)
    target = 0.5 * (3.0 * atoms - 3.0) * BOLTZMANN_EV_PER_K * temperature_k
    xi = state.thermostat_xi[state.batch][:, None]
    drive = state.accelerations() - xi * state.velocities
    positions = state.positions + dt * state.velocities + (0.5 * dt**2) * drive
    kinetic_before = state.kinetic_energy()
    velocities = state.velocities + half * drive
    energy, forces = force_fn(positions)
    kinetic_half = kinetic_energy_ev_batch(state.masses, velocities, state.batch, state.num_systems)
    new_xi = state.thermostat_xi + half * (kinetic_before - target) / mass_q + half * (kinetic_half - target) / mass_q
    moved = replace(
        state, positions=positions, forces=forces, potential_energy=energy, thermostat_xi=new_xi, step=state.step + 1
    )
    velocities = (velocities + half * moved.accelerations()) / (1.0 + half * new_xi)[state.batch][:, None]
    return replace(moved, velocities=velocities)


def make_step(settings: MDSettings, force_fn: ForceFn, keys: torch.Tensor, counters: torch.Tensor) -> StepFn:
    """The step function `state -> state` for `settings.thermostat` ("nve", "langevin", "nose-hoover");
    keys [B, 2] and counters [N, 3, 2] key the Langevin noise (`baoab_langevin_step`)."""
    dt, temperature = settings.timestep_fs, settings.temperature_k
    if settings.thermostat == "nve":
        return lambda state: velocity_verlet_step(state, force_fn, dt)
    if settings.thermostat == "langevin":
        friction = settings.friction_per_fs
        return lambda state: baoab_langevin_step(state, force_fn, keys, counters, dt, temperature, friction)
    if settings.thermostat == "nose-hoover":
        return lambda state: nose_hoover_step(state, force_fn, dt, temperature, settings.ttime)
    raise ValueError(f"the torch engine has no thermostat {settings.thermostat!r}")


class TorchEngine:
    """The batched torch engine over R replicas (`Atoms`, one per replica; any mix of molecules).

    Args:
        potential: a loaded potential; integration runs in float64 on its device (the network
            sees its own dtype).
        systems: the start structure of each replica.
        settings: the run (thermostat, step, temperature, seed: replica k is seeded seed + k).
    """

    name = "torch"

    def __init__(self, potential: Potential, systems: Sequence[Atoms], settings: MDSettings) -> None:
        self.potential = potential
        self.settings = settings
        self.device = potential.device
        self.replicas = list(range(len(systems)))
        self.counts = [len(atoms) for atoms in systems]
        self.numbers = [torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long) for atoms in systems]
        self.start = [torch.as_tensor(atoms.get_positions(), dtype=torch.float64) for atoms in systems]
        self.cells = [torch.as_tensor(np.array(atoms.cell.array), dtype=torch.float64) for atoms in systems]
        self.pbcs = [torch.as_tensor(np.array(atoms.pbc), dtype=torch.bool) for atoms in systems]
        velocity_generators = replica_generators([settings.seed + k for k in self.replicas])
        velocities = [
            torch.as_tensor(maxwell_boltzmann_velocities(masses_of(z), settings.temperature_k, g))
            for z, g in zip(self.numbers, velocity_generators)
        ]
        self.seconds_before = 0.0
        self._build()
        positions = torch.cat(self.start).to(self.device)
        energy, forces = self.force_fn(positions)
        self.state = MDState(
            positions=positions,
            velocities=torch.cat(velocities).to(self.device),
            forces=forces,
            potential_energy=energy,
            masses=torch.as_tensor(np.concatenate([masses_of(z) for z in self.numbers]), device=self.device),
            batch=self.force_fn.batch,
            thermostat_xi=torch.zeros(len(systems), dtype=torch.float64, device=self.device),
        )

    def _build(self) -> None:
        """The force function and step function of the active replicas."""
        numbers = torch.cat(self.numbers)
        batch = torch.repeat_interleave(torch.arange(len(self.counts)), torch.as_tensor(self.counts))
        self.force_fn = self._force_function(numbers, batch, torch.cat(self.start))
        seeds = torch.as_tensor([self.settings.seed + k for k in self.replicas], dtype=torch.long, device=self.device)
        keys = replica_keys(seeds)
        self.step_fn = make_step(self.settings, self.force_fn, keys, element_counters(self.force_fn.batch))

    def _force_function(self, numbers: torch.Tensor, batch: torch.Tensor, start: torch.Tensor) -> BatchedPotential:
        """The force function of this batch (`mlff.dynamics.compiled` gives a compiled one)."""
        return BatchedPotential(
            self.potential, numbers, batch, start, cell=torch.stack(self.cells), pbc=torch.stack(self.pbcs)
        )

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def potential_seconds(self) -> float | None:
        if self.force_fn.seconds is None:
            return None
        return self.seconds_before + self.force_fn.seconds

    def advance(self, steps: int) -> None:
        """Integrate every active replica `steps` steps."""
        state = self.state
        for _ in range(steps):
            state = self.step_fn(state)
        self.state = state

    def frame(self) -> Frame:
        """The active replicas' current positions, forces, energies and temperatures."""
        state = self.state
        positions = state.positions.cpu().numpy()
        forces = state.forces.cpu().numpy()
        bounds = np.cumsum([0, *self.counts])
        return Frame(
            step=state.step,
            time_fs=state.step * self.settings.timestep_fs,
            replicas=list(self.replicas),
            positions_a=[positions[bounds[b] : bounds[b + 1]] for b in range(len(self.counts))],
            forces_ev_per_a=[forces[bounds[b] : bounds[b + 1]] for b in range(len(self.counts))],
            potential_energy_ev=state.potential_energy.cpu().numpy(),
            kinetic_energy_ev=state.kinetic_energy().cpu().numpy(),
            temperature_k=state.temperature().cpu().numpy(),
        )

    def drop(self, replicas: Sequence[int]) -> None:
        """Stop integrating these replicas (collapsed ones): the batch shrinks, the others go on unchanged."""
        keep = kept(self.replicas, replicas)
        if len(keep) == len(self.replicas):
            return
        atom_keep = torch.as_tensor([b in keep for b in range(len(self.replicas))], device=self.device)[
            self.state.batch
        ]
        system_keep = torch.as_tensor(keep, dtype=torch.long, device=self.device)
        self.seconds_before += self.force_fn.seconds or 0.0
        self.replicas = [self.replicas[b] for b in keep]
        self.counts = [self.counts[b] for b in keep]
        self.numbers = [self.numbers[b] for b in keep]
        self.start = [self.start[b] for b in keep]
        self.cells = [self.cells[b] for b in keep]
        self.pbcs = [self.pbcs[b] for b in keep]
        state = self.state
        if not keep:
            self.replicas = []
            return
        self._build()
        self.state = MDState(
            positions=state.positions[atom_keep],
            velocities=state.velocities[atom_keep],
            forces=state.forces[atom_keep],
            potential_energy=state.potential_energy[system_keep],
            masses=state.masses[atom_keep],
            batch=self.force_fn.batch,
            thermostat_xi=state.thermostat_xi[system_keep],
            step=state.step,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit: the state tensors and the active replicas (the
        noise is a function of the step)."""
        state = self.state
        return {
            "replicas": list(self.replicas),
            "step": state.step,
            "positions": state.positions.cpu(),
            "velocities": state.velocities.cpu(),
            "thermostat_xi": state.thermostat_xi.cpu(),
            "potential_seconds": self.potential_seconds,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from `state_dict()` output of an engine built with the same systems and settings."""
        self.drop([k for k in self.replicas if k not in saved["replicas"]])
        positions = saved["positions"].to(self.device)
        energy, forces = self.force_fn(positions)
        if self.force_fn.seconds is not None:
            self.force_fn.seconds = 0.0
        self.seconds_before = float(saved["potential_seconds"] or 0.0)
        self.state = replace(
            self.state,
            positions=positions,
            velocities=saved["velocities"].to(self.device),
            forces=forces,
            potential_energy=energy,
            thermostat_xi=saved["thermostat_xi"].to(self.device),
            step=int(saved["step"]),
        )
