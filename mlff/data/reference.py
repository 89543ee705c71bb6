"""Reference statistics a potential carries for stability checks with no dataset present.

For a dataset of one molecule: start frames from the test split, the bonded
pairs (ASE's natural cutoffs on the first start frame, as MDsim does), their
mean lengths over the training frames, and h(r), the distribution of all
interatomic distances over the dataset's frames (MDsim: 500 bins on (0, 10] A,
density-normalised).
"""

from pathlib import Path
from typing import Any

import numpy as np

from mlff.data.frames import Frames
from mlff.data.splits import Split, make_split


def find_bonds(atomic_numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bonded pairs [K, 2] (i < j) by ASE's NeighborList with natural cutoffs."""
    from ase import Atoms
    from ase.neighborlist import NeighborList, natural_cutoffs

    atoms = Atoms(numbers=atomic_numbers, positions=positions)
    neighbors = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=False)
    neighbors.update(atoms)
    pairs = [(i, int(j)) for i in range(len(atoms)) for j in neighbors.get_neighbors(i)[0]]
    return np.array(sorted((min(p), max(p)) for p in pairs), dtype=np.int64).reshape(-1, 2)


def bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Lengths [..., K] in Angstrom of bonds [K, 2] in positions [..., n, 3]."""
    return np.linalg.norm(positions[..., bonds[:, 0], :] - positions[..., bonds[:, 1], :], axis=-1)


HR_MAX_A = 10.0
HR_BINS = 500


def distance_counts(positions: np.ndarray, r_max_a: float = HR_MAX_A, bins: int = HR_BINS) -> np.ndarray:
    """Histogram counts [bins] of all interatomic distances (pairs i < j) on (0, r_max_a] Angstrom.

    Args:
        positions: [n, 3] or [F, n, 3] Angstrom (F frames pooled).
    """
    coordinates = np.asarray(positions, dtype=np.float64).reshape(-1, *np.shape(positions)[-2:])
    first, second = np.triu_indices(coordinates.shape[1], k=1)
    distances = np.linalg.norm(coordinates[:, first] - coordinates[:, second], axis=-1).ravel()
    counts, _ = np.histogram(distances, bins=bins, range=(0.0, r_max_a))
    return counts


def hr_density(counts: np.ndarray, r_max_a: float = HR_MAX_A) -> np.ndarray:
    """h(r) [bins] per Angstrom from `distance_counts`: integrates to 1 over (0, r_max_a] (numpy's
    density=True; MDsim's normalisation). All zeros where there are no counts."""
    total = counts.sum()
    width = r_max_a / counts.shape[0]
    return counts / (total * width) if total else np.zeros(counts.shape[0])


def hr_mae(density: np.ndarray, reference: np.ndarray, r_max_a: float = HR_MAX_A) -> float:
    """MDsim's h(r) error: the mean absolute difference of two h(r) times r_max (10 A), i.e. the
    integral of |h - h_ref| dr; 0 for identical distributions, 2 for disjoint ones."""
    return float(np.abs(np.asarray(density) - np.asarray(reference)).mean() * r_max_a)


def reference_statistics(frames: Frames, split: Split, num_starts: int = 5, seed: int = 0) -> dict[str, Any] | None:
    """JSON-able reference data of a one-molecule dataset, or None for mixed datasets."""
    if len(set(frames.n_atoms.tolist())) != 1:
        return None
    n = int(frames.n_atoms[0])
    numbers = frames.atomic_numbers[:n]
    if not np.all(frames.atomic_numbers.reshape(-1, n) == numbers):
        return None
    positions = frames.positions.reshape(-1, n, 3)
    pool = split.test if split.test.size else split.train
    starts = np.sort(np.random.default_rng(seed).choice(pool, size=min(num_starts, pool.size), replace=False))
    bonds = find_bonds(numbers, positions[starts[0]])
    mean_lengths = bond_lengths(positions[split.train], bonds).mean(axis=0) if bonds.size else np.zeros(0)
    return {
        "atomic_numbers": numbers.tolist(),
        "start_frames": starts.tolist(),
        "start_positions": positions[starts].tolist(),
        "bonds": bonds.tolist(),
        "mean_bond_lengths": mean_lengths.tolist(),
        "hr": {"r_max_a": HR_MAX_A, "density": hr_density(distance_counts(positions)).tolist()},
        "source": frames.source,
    }


def shortest_pair_distances(frames: Frames, frame_indices: np.ndarray, species: list[int]) -> np.ndarray:
    """[S, S] Angstrom: the shortest distance between atoms of species a and b over the given frames
    (0 for a pair of species that never meet in one frame): the core repulsion's onsets
    (`mlff.models.EnergyModel.set_core_repulsion`)."""
    position = {z: index for index, z in enumerate(species)}
    shortest = np.full((len(species), len(species)), np.inf)
    for frame in np.asarray(frame_indices, dtype=np.int64):
        rows = frames.atom_indices(np.array([frame]))
        numbers, coordinates = frames.atomic_numbers[rows], frames.positions[rows]
        unknown = sorted(set(numbers.tolist()) - set(position))
        if unknown:
            raise ValueError(f"frame {frame} has atomic numbers {unknown} outside the species {species}")
        kinds = np.array([position[z] for z in numbers.tolist()])
        first, second = np.triu_indices(numbers.size, k=1)
        distances = np.linalg.norm(coordinates[first] - coordinates[second], axis=-1)
        np.minimum.at(shortest, (kinds[first], kinds[second]), distances)
        np.minimum.at(shortest, (kinds[second], kinds[first]), distances)
    return np.where(np.isfinite(shortest), shortest, 0.0)


def dataset_reference(path: str | Path) -> dict[str, Any]:
    """The reference statistics of a one-molecule dataset file (start frames from its test split,
    bonds, mean bond lengths over its training frames, h(r) over all its frames)."""
    from mlff.data.readers import read_frames

    frames = read_frames(path)
    reference = reference_statistics(frames, make_split(frames))
    if reference is None:
        raise ValueError(f"{path}: reference statistics need a dataset of one molecule")
    return reference
