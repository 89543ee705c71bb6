"""Thermodynamic measures with one definition for every engine."""

import numpy as np
import torch

from mlff.units import BOLTZMANN_EV_PER_K, EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2


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


def kinetic_energy_ev_batch(masses_amu: torch.Tensor, velocities_a_per_fs: torch.Tensor) -> torch.Tensor:
    """Kinetic energy [R] eV of R replicas, centre-of-mass motion removed.

    Args:
        masses_amu: [n] amu.
        velocities_a_per_fs: [R, n, 3] Angstrom/fs.
    """
    velocities = velocities_a_per_fs - centre_of_mass_velocity(masses_amu, velocities_a_per_fs)
    kinetic = 0.5 * (masses_amu[:, None] * velocities**2).sum(dim=(-2, -1))
    return kinetic / EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2


def temperature_k_batch(masses_amu: torch.Tensor, velocities_a_per_fs: torch.Tensor) -> torch.Tensor:
    """T [R] in K of R replicas: 2 KE / ((3n - 3) k_B), centre-of-mass motion removed (as `temperature_k`).

    Args:
        masses_amu: [n] amu.
        velocities_a_per_fs: [R, n, 3] Angstrom/fs.
    """
    dof = 3 * masses_amu.shape[0] - 3
    kinetic = kinetic_energy_ev_batch(masses_amu, velocities_a_per_fs)
    if dof <= 0:
        return torch.zeros_like(kinetic)
    return 2.0 * kinetic / (dof * BOLTZMANN_EV_PER_K)


def centre_of_mass_velocity(masses_amu: torch.Tensor, velocities: torch.Tensor) -> torch.Tensor:
    """Centre-of-mass velocity [R, 1, 3] of velocities [R, n, 3] (any unit) with masses [n]."""
    return (masses_amu[:, None] * velocities).sum(dim=-2, keepdim=True) / masses_amu.sum()
