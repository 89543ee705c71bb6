"""Reference statistics a potential carries for stability checks with no dataset present.

For a dataset of one molecule: start frames from the test split, the bonded
pairs (ASE's natural cutoffs on the first start frame, as MDsim does) and their
mean lengths over the training frames.
"""

from typing import Any

import numpy as np

from mlff.data.frames import Frames
from mlff.data.splits import Split


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
        "source": frames.source,
    }
