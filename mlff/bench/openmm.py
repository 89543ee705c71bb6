"""MD steps per second through OpenMM's TorchForce, OpenMM's PythonForce and ASE.

The same potential, structure, integrator settings (Langevin, 0.5 fs by default, 300 K)
and thread count for the three engines, measured in one run with the engines
taking turns in rounds, so that their ratios are meaningful (absolute CPU times
depend on the machine and its load):

- `torchforce`: `mlff.calculators.openmm.create_system` (every step inside OpenMM's C++ loop);
- `pythonforce`: an `openmm.PythonForce` calling the loaded potential from Python each step
  (what openmm-ml 1.8 does for its built-in potentials);
- `ase`: ASE's Langevin with `MLFFCalculator`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import openmm
import torch
from ase import Atoms
from ase import units as ase_units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from openmm import unit

from mlff.calculators.ase import MLFFCalculator
from mlff.calculators.openmm import PRECISIONS, create_system, topology_from_atoms
from mlff.export.load import Potential, load_potential
from mlff.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, FS_PER_PS, NM_TO_ANGSTROM, ns_per_day
from mlff.utils import dtype_name

ENGINES = ("torchforce", "pythonforce", "ase")
TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0
FRICTION_PER_PS = 1.0
# The inverse of the calculator's precision map, so that the two cannot disagree.
PRECISION_OF_DTYPE = {dtype: precision for precision, dtype in PRECISIONS.items()}


class PotentialComputation:
    """The PythonForce callback: energy (kJ/mol) and forces [n, 3] (kJ/mol/nm) of a State."""

    def __init__(self, potential: Potential, atomic_numbers: np.ndarray) -> None:
        self.potential = potential
        self.atomic_numbers = np.asarray(atomic_numbers)

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM
        energy, forces = self.potential.energy_and_forces(self.atomic_numbers, positions)
        return energy * EV_TO_KJ_PER_MOL, forces * EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM


def python_force_system(potential: Potential, atoms: Atoms) -> openmm.System:
    """A System of `atoms` whose only force is an `openmm.PythonForce` around `potential`."""
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    system.addForce(openmm.PythonForce(PotentialComputation(potential, atoms.get_atomic_numbers())))
    return system


@dataclass
class EngineRun:
    """A prepared MD run: advance it, wait for its result, read its positions.

    Attributes:
        step: advance by n steps.
        finish: wait until the steps are done (reads the energy).
        positions: the current positions [n, 3], Angstrom.
    """

    step: Callable[[int], Any]
    finish: Callable[[], Any]
    positions: Callable[[], np.ndarray]


def openmm_run(system: openmm.System, atoms: Atoms, timestep_fs: float = TIMESTEP_FS) -> EngineRun:
    """Langevin MD of `system` on OpenMM's CPU platform, started from `atoms` at 300 K."""
    integrator = openmm.LangevinMiddleIntegrator(
        TEMPERATURE_K * unit.kelvin, FRICTION_PER_PS / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    _, positions = topology_from_atoms(atoms)
    context.setPositions(positions)
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, 1)

    def current_positions() -> np.ndarray:
        state = context.getState(getPositions=True)
        return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)) * NM_TO_ANGSTROM

    return EngineRun(integrator.step, lambda: context.getState(getEnergy=True), current_positions)


def ase_run(potential: Potential, atoms: Atoms, timestep_fs: float = TIMESTEP_FS) -> EngineRun:
    """ASE's Langevin MD with `MLFFCalculator`, started from (a copy of) `atoms` at 300 K."""
    atoms = atoms.copy()
    thermalize_momenta(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(1))
    atoms.calc = MLFFCalculator(potential, dtype=potential.dtype)
    dynamics = Langevin(
        atoms,
        timestep_fs * ase_units.fs,
        temperature_K=TEMPERATURE_K,
        friction=FRICTION_PER_PS / (FS_PER_PS * ase_units.fs),
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    return EngineRun(dynamics.run, atoms.get_potential_energy, atoms.get_positions)


def interleaved_rates(runs: dict[str, EngineRun], steps: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Steps/s of each run in `rounds` rounds of `steps` steps, the engines taking turns in each
    round (so a change in machine load hits all of them), after `warmup` untimed steps each."""
    for run in runs.values():
        run.step(warmup)
        run.finish()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run.step(steps)
            run.finish()
            rates[name].append(steps / (time.perf_counter() - started))
    return rates


def max_bond_deviation(start: np.ndarray, end: np.ndarray, bond_length_a: float = 1.6) -> float:
    """Largest change (Angstrom) of a bond length; bonds are the start's pairs closer than bond_length_a.

    Flags runs whose molecule fell apart (the speed of an exploded molecule, with no
    neighbours left in the cutoff, is not comparable).
    """
    start_distances = np.linalg.norm(start[:, None] - start[None], axis=-1)
    end_distances = np.linalg.norm(end[:, None] - end[None], axis=-1)
    bonded = (start_distances < bond_length_a) & ~np.eye(len(start), dtype=bool)
    return float(np.abs(end_distances - start_distances)[bonded].max(initial=0.0))


def openmm_benchmark(
    potential_path: str,
    structures: dict[str, Atoms],
    steps: int = 200,
    warmup: int = 20,
    dtype: str | None = None,
    timestep_fs: float = TIMESTEP_FS,
    rounds: int = 5,
) -> list[dict[str, Any]]:
    """One row per (structure, engine): median steps/s, ns/day, the ratio to ASE's steps/s and the
    largest bond-length change over the run (a molecule that fell apart is faster but meaningless).

    Args:
        potential_path: a potential file.
        structures: name -> molecule (Angstrom).
        steps: timed MD steps per engine and round.
        warmup: untimed steps first (TorchScript optimises on the first calls).
        dtype: "float32" or "float64" for every engine; None keeps the file's.
        timestep_fs: MD time step; a tiny one (0.001 fs) times force-bound steps at an
            almost fixed geometry, for molecules the potential was not trained on.
        rounds: timed rounds, the engines taking turns; steps/s is the median over rounds.
    """
    potential = load_potential(potential_path, dtype=dtype)
    precision = PRECISION_OF_DTYPE[potential.dtype]
    rows = []
    for name, atoms in structures.items():
        topology, _ = topology_from_atoms(atoms, potential.species)
        runs = {
            "torchforce": openmm_run(create_system(topology, potential, precision), atoms, timestep_fs),
            "pythonforce": openmm_run(python_force_system(potential, atoms), atoms, timestep_fs),
            "ase": ase_run(potential, atoms, timestep_fs),
        }
        rates = interleaved_rates(runs, steps, warmup, rounds)
        median = {engine: float(np.median(values)) for engine, values in rates.items()}
        for engine in ENGINES:
            rows.append(
                {
                    "potential": str(potential_path),
                    "structure": name,
                    "atoms": len(atoms),
                    "engine": engine,
                    "dtype": dtype_name(potential.dtype),
                    "threads": torch.get_num_threads(),
                    "steps": steps,
                    "timestep_fs": timestep_fs,
                    "rounds": rounds,
                    "steps_per_second": median[engine],
                    "steps_per_second_rounds": rates[engine],
                    "ns_per_day": ns_per_day(median[engine], timestep_fs),
                    "ratio_to_ase": median[engine] / median["ase"],
                    "max_bond_deviation_a": max_bond_deviation(atoms.get_positions(), runs[engine].positions()),
                }
            )
    return rows
