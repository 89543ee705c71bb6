"""MD through ASE's own integrators (VelocityVerlet, Langevin, NoseHooverChainNVT) with the mlff calculator."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.io import Trajectory
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlff.dynamics.observers import Observer
from mlff.dynamics.thermo import energy_drift_mev_per_ps_atom, temperature_k

THERMOSTATS = ("nve", "langevin", "nose-hoover")


@dataclass
class MDSettings:
    """One MD run.

    Attributes:
        steps: integration steps.
        timestep_fs: time step, fs.
        temperature_k: initial (Maxwell-Boltzmann) and thermostat temperature, K.
        thermostat: "nve", "langevin" or "nose-hoover" (one thermostat, chain length 1).
        friction_per_fs: Langevin friction, 1/fs.
        ttime: Nose-Hoover time constant in time steps: the torch engine's thermostat mass is
            Q = 3 n k_B T (ttime timestep)^2 (MDsim); the ASE engine passes
            tdamp = ttime * timestep to NoseHooverChainNVT with tchain=1.
        seed: seeds the initial velocities and the Langevin noise.
        save_every: steps between saved frames (observed, logged, written).
    """

    steps: int = 1000
    timestep_fs: float = 0.5
    temperature_k: float = 300.0
    thermostat: str = "langevin"
    friction_per_fs: float = 0.01
    ttime: float = 20.0
    seed: int = 0
    save_every: int = 10

    def __post_init__(self) -> None:
        if self.thermostat not in THERMOSTATS:
            raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {self.thermostat!r}")
        if self.steps < 1 or self.save_every < 1 or self.timestep_fs <= 0 or self.ttime <= 0:
            raise ValueError("steps and save_every must be >= 1, timestep_fs and ttime > 0")


def load_protocol(path: str | Path, **overrides: Any) -> MDSettings:
    """MD settings from a protocol YAML (keys: the MDSettings fields), with overrides applied."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MD protocol not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: an MD protocol must be a YAML mapping")
    known = set(MDSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown protocol key(s) {unknown}; known: {sorted(known)}")
    return MDSettings(**{**raw, **overrides})


def run_ase_md(
    atoms: Atoms,
    settings: MDSettings,
    observers: Sequence[Observer] = (),
    output_dir: str | Path | None = None,
    stop_when_collapsed: bool = True,
) -> dict[str, Any]:
    """Run MD on `atoms` (its calculator attached) and return throughput and energy measures.

    The centre of mass is held fixed (an ASE FixCom constraint is added to `atoms`).

    Frames every `save_every` steps go to the observers and, with `output_dir`,
    to `trajectory.traj` (ASE format, written frame by frame) and `thermo.csv`
    (flushed each line).
    """
    rng = np.random.default_rng(settings.seed)
    thermalize_momenta(atoms, temperature_K=settings.temperature_k, rng=rng)
    Stationary(atoms)
    # ZeroRotation divides by the principal moments, one of which is 0 for a linear molecule.
    with np.errstate(invalid="ignore", divide="ignore"):
        ZeroRotation(atoms)
    atoms.set_constraint([*atoms.constraints, FixCom()])
    dt = settings.timestep_fs * units.fs
    if settings.thermostat == "nve":
        dynamics = VelocityVerlet(atoms, timestep=dt)
    elif settings.thermostat == "nose-hoover":
        dynamics = NoseHooverChainNVT(
            atoms, timestep=dt, temperature_K=settings.temperature_k, tdamp=settings.ttime * dt, tchain=1
        )
    else:
        dynamics = Langevin(
            atoms,
            timestep=dt,
            temperature_K=settings.temperature_k,
            friction=settings.friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    trajectory, thermo = _open_outputs(output_dir, atoms)
    masses = atoms.get_masses()
    times, totals = [], []
    steps_done = 0
    started = time.perf_counter()
    try:
        while steps_done < settings.steps:
            chunk = min(settings.save_every, settings.steps - steps_done)
            dynamics.run(chunk)
            steps_done += chunk
            time_fs = steps_done * settings.timestep_fs
            positions = atoms.get_positions()
            potential = atoms.get_potential_energy()
            kinetic = atoms.get_kinetic_energy()
            times.append(time_fs)
            totals.append(potential + kinetic)
            for observer in observers:
                observer.observe(steps_done, time_fs, positions)
            if trajectory is not None:
                trajectory.write(atoms)
                thermo.write(
                    f"{steps_done},{time_fs},{potential},{kinetic},{temperature_k(masses, atoms.get_velocities())}\n"
                )
                thermo.flush()
            if stop_when_collapsed and any(getattr(o, "collapsed", False) for o in observers):
                break
    finally:
        if trajectory is not None:
            trajectory.close()
            thermo.close()
    seconds = time.perf_counter() - started
    return throughput_measures(steps_done, seconds, settings.timestep_fs, len(atoms)) | {
        "energy_drift_mev_per_ps_atom": energy_drift_mev_per_ps_atom(np.array(times), np.array(totals), len(atoms)),
        "final_temperature_k": temperature_k(masses, atoms.get_velocities()),
    }


def _open_outputs(output_dir: str | Path | None, atoms: Atoms):
    if output_dir is None:
        return None, None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    thermo = open(output_dir / "thermo.csv", "w")
    thermo.write("step,time_fs,potential_energy_ev,kinetic_energy_ev,temperature_k\n")
    return Trajectory(str(output_dir / "trajectory.traj"), "w", atoms), thermo


def throughput_measures(steps: int, seconds: float, timestep_fs: float, num_atoms: int) -> dict[str, float]:
    """Steps, wall seconds, steps/s, ns/day (simulated time at `timestep_fs` fs) and atom-steps/s."""
    steps_per_second = steps / seconds if seconds > 0 else float("inf")
    return {
        "steps": steps,
        "wall_seconds": seconds,
        "steps_per_second": steps_per_second,
        "ns_per_day": steps_per_second * timestep_fs * 1e-6 * 86400.0,
        "atom_steps_per_second": steps_per_second * num_atoms,
    }
