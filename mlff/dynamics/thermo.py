"""Thermodynamic measures with one definition for every engine.

Temperature is T = 2 KE / ((3n - 3) k_B) with the centre-of-mass motion removed, whatever
the engine (ASE and OpenMM count degrees of freedom differently; mlff reports its own).

The batched functions take the flat layout of the torch engine: B systems, N atoms in all,
`batch` [N] the system of each atom.
"""

import numpy as np
import torch

from mlff.units import BOLTZMANN_EV_PER_K, EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2, EV_TO_MEV, FS_PER_PS


def kinetic_energy_ev(masses_amu: np.ndarray, velocities_a_per_fs: np.ndarray) -> float:
    """Kinetic energy in eV of one molecule, centre-of-mass motion removed: masses [n] amu,
    velocities [n, 3] Angstrom/fs."""
    return float(kinetic_energy_ev_batch(*_one_system(masses_amu, velocities_a_per_fs))[0])


def temperature_k(masses_amu: np.ndarray, velocities_a_per_fs: np.ndarray) -> float:
    """T in K of one molecule: masses [n] amu, velocities [n, 3] Angstrom/fs."""
    return float(temperature_k_batch(*_one_system(masses_amu, velocities_a_per_fs))[0])


def _one_system(
    masses_amu: np.ndarray, velocities_a_per_fs: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The batched functions' arguments for one molecule."""
    masses = torch.as_tensor(masses_amu, dtype=torch.float64)
    velocities = torch.as_tensor(velocities_a_per_fs, dtype=torch.float64)
    return masses, velocities, torch.zeros(masses.shape[0], dtype=torch.long), 1


def energy_drift_mev_per_ps_atom(times_fs: np.ndarray, total_energies_ev: np.ndarray, num_atoms: int) -> float:
    """Slope of a least-squares line through total energy vs time, meV/ps per atom."""
    if len(times_fs) < 2:
        return 0.0
    slope_ev_per_fs = np.polyfit(times_fs, total_energies_ev, 1)[0]
    return float(slope_ev_per_fs * EV_TO_MEV * FS_PER_PS / num_atoms)


def system_sum(values: torch.Tensor, batch: torch.Tensor, num_systems: int) -> torch.Tensor:
    """Per-system sums [B, ...] of per-atom values [N, ...]."""
    out = torch.zeros((num_systems, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add(0, batch, values)


def centre_of_mass_velocity(
    masses_amu: torch.Tensor, velocities: torch.Tensor, batch: torch.Tensor, num_systems: int
) -> torch.Tensor:
    """The centre-of-mass velocity of each atom's system, [N, 3] (velocities' unit)."""
    momenta = system_sum(masses_amu[:, None] * velocities, batch, num_systems)
    total_mass = system_sum(masses_amu, batch, num_systems)
    return (momenta / total_mass[:, None])[batch]


def kinetic_energy_ev_batch(
    masses_amu: torch.Tensor, velocities_a_per_fs: torch.Tensor, batch: torch.Tensor, num_systems: int
) -> torch.Tensor:
    """Kinetic energy [B] eV of each system, centre-of-mass motion removed.

    Args:
        masses_amu: [N] amu. velocities_a_per_fs: [N, 3] Angstrom/fs. batch: [N] system index.
    """
    velocities = velocities_a_per_fs - centre_of_mass_velocity(masses_amu, velocities_a_per_fs, batch, num_systems)
    kinetic = system_sum(0.5 * masses_amu * (velocities**2).sum(dim=-1), batch, num_systems)
    return kinetic / EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2


def degrees_of_freedom(batch: torch.Tensor, num_systems: int) -> torch.Tensor:
    """3n - 3 [B] of each system (float, at least 1 so that T of a single atom is 0, not NaN)."""
    atoms = torch.bincount(batch, minlength=num_systems).to(torch.float64)
    return torch.clamp(3.0 * atoms - 3.0, min=1.0)


def temperature_k_batch(
    masses_amu: torch.Tensor, velocities_a_per_fs: torch.Tensor, batch: torch.Tensor, num_systems: int
) -> torch.Tensor:
    """T [B] in K: 2 KE / ((3n - 3) k_B) per system, centre-of-mass motion removed."""
    kinetic = kinetic_energy_ev_batch(masses_amu, velocities_a_per_fs, batch, num_systems)
    dof = degrees_of_freedom(batch, num_systems).to(device=kinetic.device, dtype=kinetic.dtype)
    return 2.0 * kinetic / (dof * BOLTZMANN_EV_PER_K)


def thermal_speed(masses_amu: torch.Tensor, temperature_k: float) -> torch.Tensor:
    """sqrt(k_B T / m) [n] in Angstrom/fs: the standard deviation of each velocity component."""
    return torch.sqrt(BOLTZMANN_EV_PER_K * temperature_k * EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 / masses_amu)


def maxwell_boltzmann_velocities(
    masses_amu: np.ndarray, temperature_k: float, generator: torch.Generator
) -> np.ndarray:
    """Velocities [n, 3] Angstrom/fs of one molecule at `temperature_k`, centre-of-mass velocity removed.

    Drawn in float64 on the CPU from `generator`, so that every engine (torch, ASE, OpenMM) starts
    replica k from the same velocities for the same seed.
    """
    masses = torch.as_tensor(masses_amu, dtype=torch.float64)
    noise = torch.randn((masses.shape[0], 3), generator=generator, dtype=torch.float64)
    velocities = thermal_speed(masses, temperature_k)[:, None] * noise
    velocities = velocities - (masses[:, None] * velocities).sum(dim=0) / masses.sum()
    return velocities.numpy()
