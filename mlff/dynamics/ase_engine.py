"""MD through ASE's own integrators with the mlff calculator, one `Atoms` per replica.

The protocol maps onto ASE as: "nve" VelocityVerlet; "langevin" Langevin (friction in 1/fs,
noise from numpy's generator seeded seed + k); "nose-hoover" NoseHooverChainNVT with
tchain=1 and tdamp = ttime * timestep, whose thermostat mass 3 n k_B T tdamp^2 is MDsim's.
Each replica's centre of mass is held fixed (ASE's FixCom). Replicas run one after another:
ASE integrates one structure at a time.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet

from mlff.calculators.ase import MLFFCalculator
from mlff.dynamics.frame import Frame, frame_of, kept
from mlff.dynamics.replicas import replica_generators
from mlff.dynamics.settings import MDSettings
from mlff.dynamics.thermo import kinetic_energy_ev, maxwell_boltzmann_velocities, temperature_k
from mlff.export.load import Potential


class ASEEngine:
    """R replicas, each an `Atoms` with its own calculator and ASE integrator."""

    name = "ase"

    def __init__(self, potential: Potential, systems: Sequence[Atoms], settings: MDSettings) -> None:
        self.potential = potential
        self.settings = settings
        self.replicas = list(range(len(systems)))
        self.atoms: list[Atoms] = []
        self.dynamics: list[MolecularDynamics] = []
        self._step = 0
        generators = replica_generators([settings.seed + k for k in self.replicas])
        for k, (structure, generator) in enumerate(zip(systems, generators)):
            atoms = Atoms(
                numbers=structure.get_atomic_numbers(),
                positions=structure.get_positions(),
                cell=structure.cell,
                pbc=structure.pbc,
            )
            atoms.calc = MLFFCalculator(potential, device=potential.device, dtype=potential.dtype)
            velocities = maxwell_boltzmann_velocities(atoms.get_masses(), settings.temperature_k, generator)
            atoms.set_velocities(velocities / units.fs)
            atoms.set_constraint(FixCom())
            self.atoms.append(atoms)
            self.dynamics.append(self._integrator(atoms, k))

    def _integrator(self, atoms: Atoms, replica: int) -> MolecularDynamics:
        settings = self.settings
        dt = settings.timestep_fs * units.fs
        if settings.thermostat == "nve":
            return VelocityVerlet(atoms, timestep=dt)
        if settings.thermostat == "nose-hoover":
            return NoseHooverChainNVT(
                atoms, timestep=dt, temperature_K=settings.temperature_k, tdamp=settings.ttime * dt, tchain=1
            )
        return Langevin(
            atoms,
            timestep=dt,
            temperature_K=settings.temperature_k,
            friction=settings.friction_per_fs / units.fs,
            fixcm=False,
            rng=np.random.default_rng(settings.seed + replica),
        )

    @property
    def step(self) -> int:
        return self._step

    @property
    def potential_seconds(self) -> float:
        return sum(atoms.calc.seconds_in_potential for atoms in self.atoms)

    def advance(self, steps: int) -> None:
        """Integrate each active replica `steps` steps; a replica whose positions become NaN or
        inf is left there (the stability observer then calls it collapsed)."""
        for atoms, dynamics in zip(self.atoms, self.dynamics):
            if not np.isfinite(atoms.get_positions()).all():
                continue
            try:
                dynamics.run(steps)
            except ValueError:
                if np.isfinite(atoms.get_positions()).all():
                    raise
        self._step += steps

    def frame(self) -> Frame:
        potential, kinetic, temperatures, positions, forces = [], [], [], [], []
        for atoms in self.atoms:
            coordinates = atoms.get_positions()
            positions.append(coordinates)
            finite = np.isfinite(coordinates).all()
            velocities = atoms.get_velocities() * units.fs
            potential.append(atoms.get_potential_energy() if finite else np.nan)
            forces.append(atoms.get_forces() if finite else np.full_like(coordinates, np.nan))
            kinetic.append(kinetic_energy_ev(atoms.get_masses(), velocities))
            temperatures.append(temperature_k(atoms.get_masses(), velocities))
        return frame_of(
            self._step, self.settings.timestep_fs, self.replicas, positions, forces, potential, kinetic, temperatures
        )

    def drop(self, replicas: Sequence[int]) -> None:
        keep = kept(self.replicas, replicas)
        self.replicas = [self.replicas[b] for b in keep]
        self.atoms = [self.atoms[b] for b in keep]
        self.dynamics = [self.dynamics[b] for b in keep]

    def state_dict(self) -> dict[str, Any]:
        """Positions, momenta, the Langevin generators and the Nose-Hoover variables of each replica."""
        return {
            "replicas": list(self.replicas),
            "step": self._step,
            "potential_seconds": self.potential_seconds,
            "per_replica": [_replica_state(atoms, dynamics) for atoms, dynamics in zip(self.atoms, self.dynamics)],
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.drop([k for k in self.replicas if k not in saved["replicas"]])
        self._step = int(saved["step"])
        for b, (atoms, replica_state) in enumerate(zip(self.atoms, saved["per_replica"])):
            atoms.set_constraint()
            atoms.set_positions(replica_state["positions"])
            atoms.set_momenta(replica_state["momenta"])
            atoms.set_constraint(FixCom())
            atoms.calc.seconds_in_potential = 0.0
            self.dynamics[b] = dynamics = self._integrator(atoms, self.replicas[b])
            if "rng" in replica_state:
                dynamics.rng.bit_generator.state = replica_state["rng"]
            if "eta" in replica_state:
                dynamics._thermostat._eta[:] = replica_state["eta"]
                dynamics._thermostat._p_eta[:] = replica_state["p_eta"]
        if self.atoms:
            self.atoms[0].calc.seconds_in_potential = float(saved["potential_seconds"])


def _replica_state(atoms: Atoms, dynamics: MolecularDynamics) -> dict[str, Any]:
    state: dict[str, Any] = {"positions": atoms.get_positions(), "momenta": atoms.get_momenta()}
    if isinstance(dynamics, Langevin):
        state["rng"] = dynamics.rng.bit_generator.state
    if isinstance(dynamics, NoseHooverChainNVT):
        # ASE keeps the thermostat's variables private; they are its whole state.
        state["eta"] = dynamics._thermostat._eta.copy()
        state["p_eta"] = dynamics._thermostat._p_eta.copy()
    return state
