"""MD through OpenMM's integrators with the potential as an openmm-torch TorchForce.

One OpenMM Context per replica (OpenMM integrates one System at a time), each System holding the
potential's TorchForce and a CMMotionRemover, with ASE's element masses (so that every engine
integrates the same masses). The protocol maps onto OpenMM as: "nve" VerletIntegrator;
"langevin" LangevinMiddleIntegrator (friction converted to 1/ps, random seed seed + k + 1,
since OpenMM reads a seed of 0 as "pick one at random"); "nose-hoover" NoseHooverIntegrator with
chainLength=1 and collision frequency 1 / (ttime * timestep), whose thermostat mass
N_dof k_B T (ttime timestep)^2 uses OpenMM's N_dof = 3n - 3 where MDsim uses 3n, and which
integrates the thermostat with OpenMM's multiple-time-step Yoshida-Suzuki scheme rather than
MDsim's single step. Units cross the boundary here: nm, ps and kJ/mol inside OpenMM.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import openmm
from ase import Atoms
from openmm import unit

from mlff.dynamics.frame import Frame, frame_of, kept
from mlff.dynamics.replicas import masses_of, replica_generators
from mlff.dynamics.settings import MDSettings
from mlff.dynamics.thermo import kinetic_energy_ev, maxwell_boltzmann_velocities, temperature_k
from mlff.export.load import Potential
from mlff.units import (
    ANGSTROM_TO_NM,
    EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM,
    EV_TO_KJ_PER_MOL,
    FS_PER_PS,
    NM_TO_ANGSTROM,
)

# Angstrom/fs -> nm/ps: 0.1 nm per Angstrom times 1000 fs per ps.
ANGSTROM_PER_FS_TO_NM_PER_PS = ANGSTROM_TO_NM * FS_PER_PS


class OpenMMEngine:
    """R replicas, each its own OpenMM Context with the potential as a TorchForce."""

    name = "openmm"

    def __init__(self, potential: Potential, systems: Sequence[Atoms], settings: MDSettings) -> None:
        from mlff.calculators.openmm import create_system, topology_from_atoms

        self.settings = settings
        self.replicas = list(range(len(systems)))
        self.masses = [masses_of(atoms.get_atomic_numbers()) for atoms in systems]
        self.contexts: list[openmm.Context] = []
        self.exploded: list[bool] = []
        self._step = 0
        platform = openmm.Platform.getPlatformByName("CUDA" if potential.device.type == "cuda" else "CPU")
        generators = replica_generators([settings.seed + k for k in self.replicas])
        for k, (atoms, masses, generator) in enumerate(zip(systems, self.masses, generators)):
            topology, positions = topology_from_atoms(atoms, potential.species)
            system = create_system(topology, potential)
            for index, mass in enumerate(masses):
                system.setParticleMass(index, float(mass))
            context = openmm.Context(system, self._integrator(k), platform)
            context.setPositions(positions)
            velocities = maxwell_boltzmann_velocities(masses, settings.temperature_k, generator)
            context.setVelocities(velocities * ANGSTROM_PER_FS_TO_NM_PER_PS)
            self.contexts.append(context)
            self.exploded.append(False)

    def _integrator(self, replica: int) -> openmm.Integrator:
        settings = self.settings
        step_ps = settings.timestep_fs / FS_PER_PS
        if settings.thermostat == "nve":
            return openmm.VerletIntegrator(step_ps)
        if settings.thermostat == "nose-hoover":
            collision_per_ps = 1.0 / (settings.ttime * step_ps)
            return openmm.NoseHooverIntegrator(settings.temperature_k, collision_per_ps, step_ps, 1)
        integrator = openmm.LangevinMiddleIntegrator(
            settings.temperature_k, settings.friction_per_fs * FS_PER_PS, step_ps
        )
        integrator.setRandomNumberSeed(settings.seed + replica + 1)
        return integrator

    @property
    def step(self) -> int:
        return self._step

    @property
    def potential_seconds(self) -> None:
        """OpenMM runs the potential inside its C++ step: its share of the time is not measured."""
        return None

    def advance(self, steps: int) -> None:
        """Integrate each active replica `steps` steps; a replica whose positions became NaN or inf
        (the potential refuses them) is marked exploded and shown with NaN positions."""
        for b, context in enumerate(self.contexts):
            if self.exploded[b]:
                continue
            try:
                context.getIntegrator().step(steps)
            except openmm.OpenMMException:
                positions = context.getState(getPositions=True).getPositions(asNumpy=True)
                if np.isfinite(positions.value_in_unit(unit.nanometer)).all():
                    raise
                self.exploded[b] = True
        self._step += steps

    def frame(self) -> Frame:
        potential, kinetic, temperatures, positions, forces = [], [], [], [], []
        for b, (context, masses) in enumerate(zip(self.contexts, self.masses)):
            if self.exploded[b]:
                positions.append(np.full((len(masses), 3), np.nan))
                forces.append(np.full((len(masses), 3), np.nan))
                potential.append(np.nan)
                kinetic.append(np.nan)
                temperatures.append(np.nan)
                continue
            state = context.getState(getPositions=True, getVelocities=True, getEnergy=True, getForces=True)
            positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM)
            kj_per_mol_nm = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            forces.append(kj_per_mol_nm / EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM)
            velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
            velocities_a_per_fs = velocities / ANGSTROM_PER_FS_TO_NM_PER_PS
            potential.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_TO_KJ_PER_MOL)
            kinetic.append(kinetic_energy_ev(masses, velocities_a_per_fs))
            temperatures.append(temperature_k(masses, velocities_a_per_fs))
        return frame_of(
            self._step, self.settings.timestep_fs, self.replicas, positions, forces, potential, kinetic, temperatures
        )

    def drop(self, replicas: Sequence[int]) -> None:
        keep = kept(self.replicas, replicas)
        self.replicas = [self.replicas[b] for b in keep]
        self.contexts = [self.contexts[b] for b in keep]
        self.masses = [self.masses[b] for b in keep]
        self.exploded = [self.exploded[b] for b in keep]

    def state_dict(self) -> dict[str, Any]:
        """OpenMM's own checkpoint of each replica (positions, velocities, thermostat, random state)."""
        return {
            "replicas": list(self.replicas),
            "step": self._step,
            "checkpoints": [context.createCheckpoint() for context in self.contexts],
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.drop([k for k in self.replicas if k not in saved["replicas"]])
        self._step = int(saved["step"])
        for context, checkpoint in zip(self.contexts, saved["checkpoints"]):
            context.loadCheckpoint(checkpoint)
