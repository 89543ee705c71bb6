"""What every engine needs to set up the replicas of a run: their masses and their random streams."""

from collections.abc import Sequence

import numpy as np
import torch


def masses_of(atomic_numbers: np.ndarray | torch.Tensor) -> np.ndarray:
    """ASE's atomic masses [n] amu (float64) of atomic numbers [n]."""
    from ase.data import atomic_masses

    return np.asarray(atomic_masses[np.asarray(atomic_numbers, dtype=np.int64)], dtype=np.float64)


def replica_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per replica seeded with its seed (initial velocities come first from it), so
    replica k's trajectory is the same whether it runs alone or in a batch, in any engine."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]
