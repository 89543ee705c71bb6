"""Per-element reference energies and the energy scale, fitted on training frames."""

import numpy as np

from mlff.data.frames import Frames


def fit_element_energies(frames: Frames, frame_indices: np.ndarray, species: list[int]) -> list[float]:
    """Least-squares reference energy per species (eV): E_frame ~ sum_z count_z e_z.

    np.linalg.lstsq returns the minimum-norm solution when the compositions do
    not determine every e_z (a dataset of one molecule).
    """
    counts = frames.composition(species)[frame_indices]
    solution, *_ = np.linalg.lstsq(counts, frames.energies[frame_indices], rcond=None)
    return [float(value) for value in solution]


def force_rms(frames: Frames, frame_indices: np.ndarray) -> float:
    """Root mean square of the force components of the given frames, eV/A."""
    rows = frames.atom_indices(frame_indices)
    value = float(np.sqrt(np.mean(frames.forces[rows] ** 2)))
    return value if value > 0.0 else 1.0
