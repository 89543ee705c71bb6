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

# A pair is bonded when closer than the sum of its covalent radii (ASE's natural cutoffs) plus this
# (ASE NeighborList's default skin): the radii sum alone is shorter than a C-H bond (0.76 + 0.31 A
# against 1.09 A) and than an O-H bond stretched at 300 K (0.97 A).
BOND_SKIN_A = 0.3


def find_bonds(atomic_numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bonded pairs [K, 2] (i < j): closer than the sum of covalent radii plus BOND_SKIN_A (Angstrom)."""
    from ase import Atoms
    from ase.neighborlist import NeighborList, natural_cutoffs

    atoms = Atoms(numbers=atomic_numbers, positions=positions)
    neighbors = NeighborList(natural_cutoffs(atoms), skin=BOND_SKIN_A, self_interaction=False, bothways=False)
    neighbors.update(atoms)
    pairs = [(i, int(j)) for i in range(len(atoms)) for j in neighbors.get_neighbors(i)[0]]
    return np.array(sorted((min(p), max(p)) for p in pairs), dtype=np.int64).reshape(-1, 2)


def bond_lengths(
    positions: np.ndarray, bonds: np.ndarray, cell: np.ndarray | None = None, pbc: np.ndarray | None = None
) -> np.ndarray:
    """Lengths [..., K] in Angstrom of bonds [K, 2] in positions [..., n, 3].

    With a cell [3, 3] (Angstrom, rows) and pbc [3] having a periodic axis, each bond is taken
    under minimum image, so a molecule split across the box face keeps its bond lengths.
    """
    vectors = positions[..., bonds[:, 1], :] - positions[..., bonds[:, 0], :]
    if not _periodic(pbc):
        return np.linalg.norm(vectors, axis=-1)
    return minimum_image_lengths(vectors, cell, pbc)


def _periodic(pbc: np.ndarray | None) -> bool:
    return pbc is not None and bool(np.any(pbc))


def minimum_image_lengths(vectors: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """|v| [...] under minimum image of vectors [..., 3] Angstrom in a cell [3, 3] with pbc [3] (ASE's find_mic)."""
    from ase.geometry import find_mic

    vectors = np.asarray(vectors, dtype=np.float64)
    _, lengths = find_mic(vectors.reshape(-1, 3), np.asarray(cell, dtype=np.float64), np.asarray(pbc, dtype=bool))
    return lengths.reshape(vectors.shape[:-1])


def molecular_bonds(
    atomic_numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray | None = None, pbc: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Intramolecular bonds [K, 2] (i < j) and molecule labels [n] of a liquid or molecular crystal.

    Pairs closer than their covalent radii plus BOND_SKIN_A (the convention of `find_bonds`; under
    minimum image when periodic) are candidates; each hydrogen keeps only its nearest partner (one
    covalent bond: a hydrogen bond O-H...O is not one), and the molecules are the connected
    components of what is left. A bond broken later in a run is then a real collapse, while a
    molecule wandering across the box face is not.
    """
    from ase import Atoms
    from ase.neighborlist import natural_cutoffs, neighbor_list
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    periodic = _periodic(pbc)
    atoms = Atoms(
        numbers=atomic_numbers, positions=positions, cell=cell if periodic else None, pbc=pbc if periodic else False
    )
    radii = np.asarray(natural_cutoffs(atoms)) + BOND_SKIN_A / 2.0
    first, second, distances = neighbor_list("ijd", atoms, radii)
    keep = first != second
    first, second, distances = first[keep], second[keep], distances[keep]
    pairs: dict[tuple[int, int], float] = {}
    for i, j, d in zip(first.tolist(), second.tolist(), distances.tolist()):
        key = (min(i, j), max(i, j))
        pairs[key] = min(d, pairs.get(key, np.inf))
    numbers = np.asarray(atomic_numbers)
    nearest: dict[int, tuple[float, tuple[int, int]]] = {}
    for key, d in pairs.items():
        for atom in key:
            if numbers[atom] == 1 and d < nearest.get(atom, (np.inf, key))[0]:
                nearest[atom] = (d, key)
    bonds = sorted(key for key in pairs if all(numbers[a] != 1 or nearest[a][1] == key for a in key))
    bond_array = np.array(bonds, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(bonds)), (bond_array[:, 0], bond_array[:, 1])), shape=(len(numbers),) * 2)
    _, labels = connected_components(graph, directed=False)
    return bond_array, labels.astype(np.int64)


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


def element_pair_name(z_a: int, z_b: int) -> str:
    """ "O-H"-style key of an element pair, heavier element first (the same for (a, b) and (b, a))."""
    from ase.data import chemical_symbols

    high, low = max(z_a, z_b), min(z_a, z_b)
    return f"{chemical_symbols[high]}-{chemical_symbols[low]}"


def pair_distance_counts(
    atomic_numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    r_max_a: float = HR_MAX_A,
    bins: int = HR_BINS,
) -> dict[str, np.ndarray]:
    """Histogram counts [bins] on (0, r_max_a] Angstrom of the distances of each element pair ("O-H", ...).

    Pairs i < j of one frame (positions [n, 3]) or F frames pooled ([F, n, 3]); under minimum
    image when `pbc` has a periodic axis (cell [3, 3] Angstrom), so the counts are complete only
    up to half the box's smallest width: choose r_max_a at most that (`half_width`).
    """
    numbers = np.asarray(atomic_numbers, dtype=np.int64)
    coordinates = np.asarray(positions, dtype=np.float64).reshape(-1, numbers.size, 3)
    first, second = np.triu_indices(numbers.size, k=1)
    vectors = coordinates[:, second] - coordinates[:, first]
    if _periodic(pbc):
        distances = minimum_image_lengths(vectors, cell, pbc)
    else:
        distances = np.linalg.norm(vectors, axis=-1)
    names = np.array([element_pair_name(a, b) for a, b in zip(numbers[first].tolist(), numbers[second].tolist())])
    counts = {}
    for name in sorted(set(names.tolist())):
        selected = distances[:, names == name].ravel()
        counts[name], _ = np.histogram(selected, bins=bins, range=(0.0, r_max_a))
    return counts


def half_width(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Half the smallest perpendicular width (Angstrom) over the periodic axes of a cell [3, 3]:
    the largest distance minimum image gets right; inf without a periodic axis."""
    cell = np.asarray(cell, dtype=np.float64)
    if not _periodic(pbc):
        return float("inf")
    volume = abs(float(np.linalg.det(cell)))
    widths = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    return 0.5 * min(w for w, periodic in zip(widths, np.asarray(pbc, bool)) if periodic)


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
