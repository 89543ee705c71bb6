"""Per-element reference energies and the energy scale, fitted on training frames.

Both are fitted, not trained: they are fixed before the first step (and
re-fitted on the new data when fine-tuning, see `mlff.training.finetune`).
Frames of any mix of molecules take part: the fit works on each frame's
composition (count of each element).
"""

import numpy as np

from mlff.data.frames import Frames


def fit_element_energies(frames: Frames, frame_indices: np.ndarray, species: list[int]) -> list[float]:
    """Least-squares reference energy per species (eV): E_frame ~ sum_z count_z e_z.

    Only the given frames with an energy label (Frames.has_energy) take part; with
    none, every reference is 0. np.linalg.lstsq returns the minimum-norm solution
    when the compositions do not determine every e_z (a dataset of one molecule;
    a species absent from the fitted frames gets 0).

    Args:
        frames: the dataset.
        frame_indices: frames to fit on (e.g. the training split).
        species: atomic numbers, in the model's order.
    """
    frame_indices = np.asarray(frame_indices, dtype=np.int64)
    frame_indices = frame_indices[frames.has_energy[frame_indices]]
    if frame_indices.size == 0:
        return [0.0] * len(species)
    counts = frames.composition(species)[frame_indices]
    solution, *_ = np.linalg.lstsq(counts, frames.energies[frame_indices], rcond=None)
    return [float(value) for value in solution]


def force_rms(frames: Frames, frame_indices: np.ndarray) -> float:
    """Root mean square of the force components of the given off-equilibrium frames, eV/A (1 if none or all 0)."""
    frame_indices = np.asarray(frame_indices, dtype=np.int64)
    frame_indices = frame_indices[~frames.equilibrium[frame_indices]]
    if frame_indices.size == 0:
        return 1.0
    rows = frames.atom_indices(frame_indices)
    value = float(np.sqrt(np.mean(frames.forces[rows] ** 2)))
    return value if value > 0.0 else 1.0
