"""MD in torch: R replicas of one molecule advanced together, one potential call per step.

The state is plain data (`MDState`, tensors) and a step is a pure function of the state,
its parameters and, for Langevin, one `torch.Generator` per replica (JAX-MD style).

Units: positions Angstrom, velocities Angstrom/fs, forces eV/Angstrom, energies eV, masses
amu, time fs. An acceleration F/m in eV/(Angstrom amu) is
F/m * EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 Angstrom/fs^2 (`mlff.units`), written `C` below.

Integrators (dt the time step, a = C F / m):

* velocity Verlet (NVE): v += a dt/2; x += v dt; a = a(x); v += a dt/2.
* BAOAB Langevin (Leimkuhler & Matthews 2013), friction gamma (1/fs), temperature T (K):
  B: v += a dt/2; A: x += v dt/2;
  O: v = c1 v + sqrt(1 - c1^2) sqrt(C k_B T / m) xi, c1 = exp(-gamma dt), xi ~ N(0, 1) from
  the replica's own generator, then the centre-of-mass velocity is removed (as ASE's FixCom);
  A: x += v dt/2; a = a(x); B: v += a dt/2.
* Nose-Hoover, one thermostat (chain length 1), as MDsim's NoseHoover (Fu et al. 2022; the
  Frenkel & Smit scheme), thermostat variable zeta (1/fs), mass Q = 3 n k_B T (ttime dt)^2
  (eV fs^2), target kinetic energy K0 = (3n - 3) k_B T / 2 (the degrees of freedom of the
  reported temperature; MDsim uses 3n):
  x += v dt + (a - zeta v) dt^2/2; K = KE(v); v' = v + (a - zeta v) dt/2; a = a(x);
  zeta += dt/2 (K - K0)/Q; zeta += dt/2 (KE(v') - K0)/Q; v = (v' + a dt/2) / (1 + zeta dt/2).
  Here dzeta/dt = (KE - K0)/Q is already in 1/fs^2 (eV over eV fs^2): no unit factor.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff.dynamics.ase_engine import MDSettings, throughput_measures
from mlff.dynamics.observers import Observer
from mlff.dynamics.thermo import (
    centre_of_mass_velocity,
    energy_drift_mev_per_ps_atom,
    kinetic_energy_ev_batch,
    temperature_k_batch,
)
from mlff.export.load import Potential
from mlff.units import BOLTZMANN_EV_PER_K, EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2

ForceFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""positions [R, n, 3] Angstrom -> (potential energy [R] eV, forces [R, n, 3] eV/Angstrom)."""

StepFn = Callable[["MDState"], "MDState"]


@dataclass(frozen=True)
class MDState:
    """The state of R replicas of one molecule of n atoms.

    Attributes:
        positions: [R, n, 3] Angstrom.
        velocities: [R, n, 3] Angstrom/fs.
        forces: [R, n, 3] eV/Angstrom, at `positions`.
        potential_energy: [R] eV, at `positions`.
        masses: [n] amu.
        thermostat_xi: [R] Nose-Hoover thermostat variable, 1/fs (zero for other integrators).
        step: integration steps taken.
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    potential_energy: torch.Tensor
    masses: torch.Tensor
    thermostat_xi: torch.Tensor
    step: int = 0

    @property
    def replicas(self) -> int:
        return self.positions.shape[0]

    def accelerations(self) -> torch.Tensor:
        """[R, n, 3] Angstrom/fs^2."""
        return self.forces / self.masses[:, None] * EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2

    def kinetic_energy(self) -> torch.Tensor:
        """[R] eV, centre-of-mass motion removed."""
        return kinetic_energy_ev_batch(self.masses, self.velocities)

    def temperature(self) -> torch.Tensor:
        """[R] K (`mlff.dynamics.thermo.temperature_k_batch`)."""
        return temperature_k_batch(self.masses, self.velocities)


class BatchedPotential:
    """A potential evaluating R copies of one molecule in one call (a `ForceFn`).

    The batch, cell and pbc tensors are built once. `seconds` accumulates the wall time spent
    in the potential (for the throughput report).
    """

    def __init__(self, potential: Potential, atomic_numbers: torch.Tensor, replicas: int) -> None:
        self.potential = potential
        self.num_atoms = int(atomic_numbers.shape[0])
        self.replicas = replicas
        device, dtype = potential.device, potential.dtype
        self.atomic_numbers = atomic_numbers.to(device=device, dtype=torch.long).repeat(replicas)
        self.batch = torch.arange(replicas, device=device).repeat_interleave(self.num_atoms)
        self.cell = torch.zeros(replicas, 3, 3, dtype=dtype, device=device)
        self.pbc = torch.zeros(replicas, 3, dtype=torch.bool, device=device)
        self.seconds = 0.0

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [R, n, 3] Angstrom -> (energy [R] eV, forces [R, n, 3] eV/Angstrom), in positions' dtype."""
        if positions.shape != (self.replicas, self.num_atoms, 3):
            raise ValueError(f"expected positions [{self.replicas}, {self.num_atoms}, 3], got {list(positions.shape)}")
        started = time.perf_counter()
        energy, forces = self.potential(
            positions.reshape(-1, 3).to(self.potential.dtype), self.atomic_numbers, self.batch, self.cell, self.pbc
        )
        if positions.device.type == "cuda":
            torch.cuda.synchronize(positions.device)
        self.seconds += time.perf_counter() - started
        return energy.to(positions.dtype), forces.reshape(positions.shape).to(positions.dtype)


def replica_generators(seed: int, replicas: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per replica, replica k seeded `seed + k`, so that a replica's noise does
    not depend on how many replicas run beside it."""
    return [torch.Generator(device=device).manual_seed(seed + k) for k in range(replicas)]


def replica_normal(generators: Sequence[torch.Generator], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise [R, *shape], row k drawn from generators[k], dtype/device of `like`."""
    return torch.stack([torch.randn(shape, generator=g, dtype=like.dtype, device=like.device) for g in generators])


def maxwell_boltzmann_velocities(
    masses_amu: torch.Tensor, temperature_k: float, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Velocities [R, n, 3] Angstrom/fs drawn at `temperature_k`, centre-of-mass velocity removed.

    Each component is sqrt(C k_B T / m) times a standard normal from the replica's generator.
    """
    sigma = _thermal_speed(masses_amu, temperature_k)
    noise = replica_normal(generators, (masses_amu.shape[0], 3), masses_amu)
    velocities = sigma[:, None] * noise
    return velocities - centre_of_mass_velocity(masses_amu, velocities)


def init_state(
    force_fn: ForceFn,
    positions: torch.Tensor,
    masses_amu: torch.Tensor,
    temperature_k: float,
    generators: Sequence[torch.Generator],
) -> MDState:
    """The step-0 state of R = len(generators) replicas started at the same positions [n, 3] A.

    Velocities are Maxwell-Boltzmann at `temperature_k`, each replica from its own generator.
    """
    replicas = len(generators)
    start = positions.unsqueeze(0).expand(replicas, -1, -1).clone()
    energy, forces = force_fn(start)
    return MDState(
        positions=start,
        velocities=maxwell_boltzmann_velocities(masses_amu, temperature_k, generators),
        forces=forces,
        potential_energy=energy,
        masses=masses_amu,
        thermostat_xi=torch.zeros(replicas, dtype=positions.dtype, device=positions.device),
    )


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
    generators: Sequence[torch.Generator],
    timestep_fs: float,
    temperature_k: float,
    friction_per_fs: float,
) -> MDState:
    """One BAOAB Langevin step (friction 1/fs, temperature K); replica k's noise from generators[k]."""
    half = 0.5 * timestep_fs
    c1 = float(np.exp(-friction_per_fs * timestep_fs))
    sigma = _thermal_speed(state.masses, temperature_k)[:, None]
    velocities = state.velocities + half * state.accelerations()
    positions = state.positions + half * velocities
    noise = replica_normal(generators, tuple(state.positions.shape[1:]), state.positions)
    velocities = c1 * velocities + float(np.sqrt(1.0 - c1**2)) * sigma * noise
    velocities = velocities - centre_of_mass_velocity(state.masses, velocities)
    positions = positions + half * velocities
    energy, forces = force_fn(positions)
    moved = replace(state, positions=positions, forces=forces, potential_energy=energy, step=state.step + 1)
    return replace(moved, velocities=velocities + half * moved.accelerations())


def nose_hoover_mass(num_atoms: int, temperature_k: float, timestep_fs: float, ttime: float) -> float:
    """Thermostat mass Q = 3 n k_B T (ttime dt)^2 in eV fs^2 (MDsim's NoseHoover)."""
    return 3.0 * num_atoms * BOLTZMANN_EV_PER_K * temperature_k * (ttime * timestep_fs) ** 2


def nose_hoover_step(
    state: MDState, force_fn: ForceFn, timestep_fs: float, temperature_k: float, ttime: float
) -> MDState:
    """One Nose-Hoover step (chain length 1; the module docstring gives the equations)."""
    dt, half = timestep_fs, 0.5 * timestep_fs
    num_atoms = state.masses.shape[0]
    mass_q = nose_hoover_mass(num_atoms, temperature_k, dt, ttime)
    target = 0.5 * (3 * num_atoms - 3) * BOLTZMANN_EV_PER_K * temperature_k
    xi = state.thermostat_xi[:, None, None]
    drive = state.accelerations() - xi * state.velocities
    positions = state.positions + dt * state.velocities + (0.5 * dt**2) * drive
    kinetic_before = state.kinetic_energy()
    velocities = state.velocities + half * drive
    energy, forces = force_fn(positions)
    kinetic_half = kinetic_energy_ev_batch(state.masses, velocities)
    new_xi = state.thermostat_xi + half * (kinetic_before - target) / mass_q + half * (kinetic_half - target) / mass_q
    moved = replace(
        state, positions=positions, forces=forces, potential_energy=energy, thermostat_xi=new_xi, step=state.step + 1
    )
    velocities = (velocities + half * moved.accelerations()) / (1.0 + half * new_xi)[:, None, None]
    return replace(moved, velocities=velocities)


def make_step(settings: MDSettings, force_fn: ForceFn, generators: Sequence[torch.Generator]) -> StepFn:
    """The step function `state -> state` for `settings.thermostat` ("nve", "langevin", "nose-hoover")."""
    dt, temperature = settings.timestep_fs, settings.temperature_k
    if settings.thermostat == "nve":
        return lambda state: velocity_verlet_step(state, force_fn, dt)
    if settings.thermostat == "langevin":
        return lambda state: baoab_langevin_step(state, force_fn, generators, dt, temperature, settings.friction_per_fs)
    if settings.thermostat == "nose-hoover":
        return lambda state: nose_hoover_step(state, force_fn, dt, temperature, settings.ttime)
    raise ValueError(f"the torch engine has no thermostat {settings.thermostat!r}")


def masses_of(atomic_numbers: torch.Tensor) -> torch.Tensor:
    """ASE's atomic masses [n] amu (float64) of atomic numbers [n]."""
    from ase.data import atomic_masses

    return torch.as_tensor(atomic_masses[atomic_numbers.cpu().numpy()], dtype=torch.float64)


def run_torch_md(
    potential: Potential,
    atomic_numbers: torch.Tensor,
    positions: torch.Tensor,
    settings: MDSettings,
    replicas: int = 1,
    observers: Sequence[Sequence[Observer]] = (),
    output_dir: str | Path | None = None,
    stop_when_collapsed: bool = True,
) -> dict[str, Any]:
    """Run R replicas of one molecule with the torch engine; return throughput and energy measures.

    Replica k starts at `positions` with Maxwell-Boltzmann velocities and draws its noise from
    a generator seeded `settings.seed + k`. Integration is in float64 on the potential's device
    (the potential sees its own dtype).

    Args:
        potential: a loaded potential (`mlff.export.load_potential`).
        atomic_numbers: [n] long.
        positions: [n, 3] Angstrom.
        settings: the run; `thermostat` is "nve", "langevin" or "nose-hoover".
        replicas: R.
        observers: one sequence of observers per replica (or empty), given each saved frame of
            their replica; a replica whose observers report `collapsed` is integrated on but no
            longer observed.
        output_dir: if given, `thermo.csv` (one line per replica and saved frame) is written there.
        stop_when_collapsed: stop once every replica has collapsed.

    Returns:
        the throughput of `throughput_measures` over all replicas (atom_steps_per_second summed over
        replicas; ns_per_day of simulated time summed over replicas, ns_per_day_per_replica
        for one), plus per-replica energy drift (meV/ps per atom) and final temperature (K),
        and their means.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if observers and len(observers) != replicas:
        raise ValueError(f"observers: expected one sequence per replica ({replicas}), got {len(observers)}")
    device = potential.device
    numbers = torch.as_tensor(atomic_numbers, dtype=torch.long, device=device)
    force_fn = BatchedPotential(potential, numbers, replicas)
    generators = replica_generators(settings.seed, replicas, device)
    masses = masses_of(numbers).to(device)
    start = torch.as_tensor(positions, dtype=torch.float64, device=device)
    state = init_state(force_fn, start, masses, settings.temperature_k, generators)
    step = make_step(settings, force_fn, generators)
    thermo = _open_thermo(output_dir)
    times: list[float] = []
    totals: list[np.ndarray] = []
    watched = [list(group) for group in observers] or [[] for _ in range(replicas)]
    force_fn.seconds = 0.0
    started = time.perf_counter()
    try:
        while state.step < settings.steps:
            for _ in range(min(settings.save_every, settings.steps - state.step)):
                state = step(state)
            time_fs = state.step * settings.timestep_fs
            kinetic = state.kinetic_energy()
            times.append(time_fs)
            totals.append((state.potential_energy + kinetic).cpu().numpy())
            _observe(watched, state, time_fs)
            if thermo is not None:
                _write_thermo(thermo, state, time_fs, kinetic)
            if stop_when_collapsed and observers and all(_collapsed(group) for group in watched):
                break
    finally:
        if thermo is not None:
            thermo.close()
    seconds = time.perf_counter() - started
    num_atoms = int(numbers.shape[0])
    measures = throughput_measures(state.step, seconds, settings.timestep_fs, num_atoms * replicas)
    measures["ns_per_day_per_replica"] = measures["ns_per_day"]
    measures["ns_per_day"] *= replicas
    measures["replicas"] = replicas
    measures["potential_time_fraction"] = force_fn.seconds / seconds if seconds > 0 else 0.0
    drifts = [energy_drift_mev_per_ps_atom(np.array(times), np.array(totals)[:, k], num_atoms) for k in range(replicas)]
    temperatures = state.temperature().cpu().tolist()
    return measures | {
        "energy_drift_mev_per_ps_atom": float(np.mean(drifts)),
        "final_temperature_k": float(np.mean(temperatures)),
        "replica_energy_drift_mev_per_ps_atom": drifts,
        "replica_final_temperature_k": temperatures,
    }


def _thermal_speed(masses_amu: torch.Tensor, temperature_k: float) -> torch.Tensor:
    """sqrt(k_B T / m) [n] in Angstrom/fs."""
    return torch.sqrt(BOLTZMANN_EV_PER_K * temperature_k * EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 / masses_amu)


def _collapsed(group: Sequence[Observer]) -> bool:
    return any(getattr(observer, "collapsed", False) for observer in group)


def _observe(watched: list[list[Observer]], state: MDState, time_fs: float) -> None:
    """Give each replica's frame to its observers, unless that replica has collapsed."""
    if not any(watched):
        return
    positions = state.positions.cpu().numpy()
    for k, group in enumerate(watched):
        if _collapsed(group):
            continue
        for observer in group:
            observer.observe(state.step, time_fs, positions[k])


def _open_thermo(output_dir: str | Path | None):
    if output_dir is None:
        return None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    thermo = open(output_dir / "thermo.csv", "w")
    thermo.write("step,time_fs,replica,potential_energy_ev,kinetic_energy_ev,temperature_k\n")
    return thermo


def _write_thermo(thermo: Any, state: MDState, time_fs: float, kinetic: torch.Tensor) -> None:
    rows = zip(state.potential_energy.tolist(), kinetic.tolist(), state.temperature().tolist(), strict=True)
    for k, (potential, kinetic_k, temperature) in enumerate(rows):
        thermo.write(f"{state.step},{time_fs},{k},{potential},{kinetic_k},{temperature}\n")
    thermo.flush()
