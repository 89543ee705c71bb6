"""What an engine shows the runner at each saved frame: plain data, one entry per active replica."""

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
        potential_energy_ev: [R] eV.
        kinetic_energy_ev: [R] eV, centre-of-mass motion removed.
        temperature_k: [R] K, 2 KE / ((3n - 3) k_B).
    """

    step: int
    time_fs: float
    replicas: list[int]
    positions_a: list[np.ndarray]
    potential_energy_ev: np.ndarray
    kinetic_energy_ev: np.ndarray
    temperature_k: np.ndarray
