"""What an engine shows the runner at each saved frame: plain data, one entry per active replica."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """The active replicas at one saved step.

    Attributes:
        step: integration steps taken.
        time_fs: simulated time, fs.
        replicas: indices (in the run) of the replicas still integrated, in the order of the lists below.
        positions_a: one [n_k, 3] array per replica, Angstrom.
        forces_ev_per_a: one [n_k, 3] array per replica, eV/Angstrom, at `positions_a` (NaN where a
            replica's coordinates are no longer finite).
        potential_energy_ev: [R] eV.
        kinetic_energy_ev: [R] eV, centre-of-mass motion removed.
        temperature_k: [R] K, 2 KE / ((3n - 3) k_B).
    """

    step: int
    time_fs: float
    replicas: list[int]
    positions_a: list[np.ndarray]
    forces_ev_per_a: list[np.ndarray]
    potential_energy_ev: np.ndarray
    kinetic_energy_ev: np.ndarray
    temperature_k: np.ndarray


def frame_of(
    step: int,
    timestep_fs: float,
    replicas: list[int],
    positions_a: list[np.ndarray],
    forces_ev_per_a: list[np.ndarray],
    potential_energy_ev: list[float],
    kinetic_energy_ev: list[float],
    temperature_k: list[float],
) -> Frame:
    """A Frame from per-replica lists (engines that hold one object per replica)."""
    return Frame(
        step=step,
        time_fs=step * timestep_fs,
        replicas=list(replicas),
        positions_a=positions_a,
        forces_ev_per_a=forces_ev_per_a,
        potential_energy_ev=np.array(potential_energy_ev, dtype=np.float64),
        kinetic_energy_ev=np.array(kinetic_energy_ev, dtype=np.float64),
        temperature_k=np.array(temperature_k, dtype=np.float64),
    )


def kept(replicas: list[int], dropped: Sequence[int]) -> list[int]:
    """Positions in `replicas` (the active replica indices) of those not in `dropped`."""
    gone = set(dropped)
    return [b for b, k in enumerate(replicas) if k not in gone]
