"""Thermodynamic measures with one definition for every engine."""

import numpy as np

from mlff.units import BOLTZMANN_EV_PER_K


def kinetic_energy_ev(masses_amu: np.ndarray, velocities: np.ndarray, remove_com: bool = True) -> float:
    """Kinetic energy in eV; velocities in ASE units (Angstrom / (Angstrom sqrt(amu/eV)))."""
    if remove_com:
        com_velocity = (masses_amu[:, None] * velocities).sum(axis=0) / masses_amu.sum()
        velocities = velocities - com_velocity
    return float(0.5 * (masses_amu[:, None] * velocities**2).sum())


def temperature_k(masses_amu: np.ndarray, velocities: np.ndarray) -> float:
    """T = 2 KE / ((3N - 3) k_B), centre-of-mass motion removed (ASE velocity units)."""
    dof = 3 * len(masses_amu) - 3
    if dof <= 0:
        return 0.0
    return 2.0 * kinetic_energy_ev(masses_amu, velocities) / (dof * BOLTZMANN_EV_PER_K)


def energy_drift_mev_per_ps_atom(times_fs: np.ndarray, total_energies_ev: np.ndarray, num_atoms: int) -> float:
    """Slope of a least-squares line through total energy vs time, meV/ps per atom."""
    if len(times_fs) < 2:
        return 0.0
    slope_ev_per_fs = np.polyfit(times_fs, total_energies_ev, 1)[0]
    return float(slope_ev_per_fs * 1000.0 * 1000.0 / num_atoms)
