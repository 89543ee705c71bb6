"""What an engine shows the runner at each saved frame: plain data, one entry per active replica."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
        force_spread_ev_per_a: one [n_k] array per replica, eV/Angstrom, the committee's per-atom force
            spread (`mlff.export.committee`; NaN where the coordinates are not finite); None when the
            potential is not a committee. The runner fills it (`add_force_spread`), whatever the engine.
    """

    step: int
    time_fs: float
    replicas: list[int]
    positions_a: list[np.ndarray]
    forces_ev_per_a: list[np.ndarray]
    potential_energy_ev: np.ndarray
    kinetic_energy_ev: np.ndarray
    temperature_k: np.ndarray
    force_spread_ev_per_a: list[np.ndarray] | None = None


def add_force_spread(frame: Frame, potential: Any, atomic_numbers: Sequence[np.ndarray]) -> None:
    """Fill `frame.force_spread_ev_per_a` with a committee potential's spread at the frame's positions.

    Args:
        frame: the saved state.
        potential: a loaded committee `mlff.export.Potential`.
        atomic_numbers: each active replica's atomic numbers, in the order of `frame.replicas`.
    """
    from mlff.export.load import molecule_batch

    spreads = [np.full(len(p), np.nan) for p in frame.positions_a]
    finite = [b for b, positions in enumerate(frame.positions_a) if np.isfinite(positions).all()]
    if finite:
        counts = [len(frame.positions_a[b]) for b in finite]
        structures = [(atomic_numbers[b], frame.positions_a[b]) for b in finite]
        _, _, spread = potential.energy_forces_spread(*molecule_batch(structures, potential.dtype, potential.device))
        values = spread.cpu().double().numpy()
        bounds = np.cumsum([0, *counts])
        for i, b in enumerate(finite):
            spreads[b] = values[bounds[i] : bounds[i + 1]]
    frame.force_spread_ev_per_a = spreads


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
