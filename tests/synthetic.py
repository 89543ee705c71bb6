"""Small labelled datasets the tests make themselves (never the shared data).

A 5-atom CH3-O-like molecule with harmonic bonds between every pair within
1.6 A of the equilibrium geometry: energies and forces are exactly consistent
(F = -dE/dR), in kcal/mol and kcal/mol/A like MD17 files.
"""

from pathlib import Path

import numpy as np

NUMBERS = np.array([6, 8, 1, 1, 1])
EQUILIBRIUM = np.array(
    [[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [-0.36, 1.03, 0.0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89]]
)


def harmonic_energy_forces(positions: np.ndarray, k: float = 300.0) -> tuple[float, np.ndarray]:
    """Energy (kcal/mol) and forces (kcal/mol/A) of harmonic springs on all pairs."""
    n = len(positions)
    reference = np.linalg.norm(EQUILIBRIUM[:, None] - EQUILIBRIUM[None], axis=-1)
    energy, forces = -1000.0, np.zeros_like(positions)
    for i in range(n):
        for j in range(i + 1, n):
            vector = positions[j] - positions[i]
            distance = np.linalg.norm(vector)
            stretch = distance - reference[i, j]
            energy += 0.5 * k * stretch**2
            push = k * stretch * vector / distance
            forces[i] += push
            forces[j] -= push
    return energy, forces


def make_frames(num_frames: int, seed: int = 0, noise_a: float = 0.08) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R [F, 5, 3] A, E [F] kcal/mol, F [F, 5, 3] kcal/mol/A."""
    rng = np.random.default_rng(seed)
    positions = EQUILIBRIUM + noise_a * rng.standard_normal((num_frames, len(NUMBERS), 3))
    labels = [harmonic_energy_forces(p) for p in positions]
    energies = np.array([e for e, _ in labels])
    forces = np.stack([f for _, f in labels])
    return positions, energies, forces


def write_md17_npz(path: Path, num_frames: int = 60, seed: int = 0, with_splits: bool = True) -> Path:
    """An MD17-layout npz (z, R, E, F in kcal/mol; optional split_train/split_test)."""
    positions, energies, forces = make_frames(num_frames, seed)
    arrays = {"z": NUMBERS, "R": positions, "E": energies, "F": forces}
    if with_splits:
        order = np.random.default_rng(seed + 1).permutation(num_frames)
        half = num_frames // 2
        arrays["split_train"] = order[:half][None]
        arrays["split_test"] = order[half:][None]
    np.savez(path, **arrays)
    return Path(path)


# Config overrides that shrink the example EGNN config to a model that trains in seconds.
TINY_TRAINING_OVERRIDES = [
    "model.backbone_options.hidden=8",
    "model.backbone_options.layers=1",
    "model.encoding_size=4",
    "model.encoding_options.n_bins=8",
    "train.batch_size=8",
    "train.eval_batch_size=32",
    "data.n_val=4",
]
