"""All pairs within the cutoff, per structure, in pure torch (TorchScript-safe).

A potential file must run with plain `torch.jit.load`, so the neighbour search
lives inside it and uses no extension library. Molecules are small, so every
ordered pair inside each structure is a candidate: sum_b n_b^2 work, not N^2
over the whole batch.
"""

from typing import NamedTuple

import torch


class Edges(NamedTuple):
    """The neighbour pairs of a batch, with their geometry and features computed once per call.

    Attributes:
        index: [2, E] long, (receiver i, sender j); each unordered pair appears in both directions.
        vectors: [E, 3] r_j - r_i, Angstrom.
        distances: [E] |r_j - r_i|, Angstrom (> 0: pairs are distinct atoms).
        encoded: [E, s] the model's distance encoding of `distances`, cutoff envelope included.
        envelope: [E] the smooth cosine cutoff envelope of `distances`, in [0, 1].
    """

    index: torch.Tensor
    vectors: torch.Tensor
    distances: torch.Tensor
    encoded: torch.Tensor
    envelope: torch.Tensor


def structure_pairs(batch: torch.Tensor, num_structures: int) -> torch.Tensor:
    """Every ordered pair (i, j), i != j, of atoms in the same structure.

    Args:
        batch: [N] structure index of each atom, non-decreasing.
        num_structures: B, the number of structures.

    Returns:
        [2, P] long tensor of (receiver i, sender j) pairs.
    """
    counts = torch.bincount(batch, minlength=num_structures)
    starts = torch.cumsum(counts, 0) - counts
    pairs_per_structure = counts * counts
    structure_of_pair = torch.repeat_interleave(torch.arange(num_structures, device=batch.device), pairs_per_structure)
    first_pair = torch.cumsum(pairs_per_structure, 0) - pairs_per_structure
    local = torch.arange(structure_of_pair.numel(), device=batch.device) - first_pair[structure_of_pair]
    size = counts[structure_of_pair]
    receiver = starts[structure_of_pair] + torch.div(local, size, rounding_mode="floor")
    sender = starts[structure_of_pair] + torch.remainder(local, size)
    keep = receiver != sender
    return torch.stack([receiver[keep], sender[keep]], dim=0)


def neighbor_pairs(
    positions: torch.Tensor, batch: torch.Tensor, num_structures: int, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs closer than the cutoff, with their vectors and distances.

    Args:
        positions: [N, 3] Angstrom.
        batch: [N] structure index of each atom, non-decreasing.
        num_structures: B.
        cutoff: Angstrom.

    Returns:
        edge_index [2, E] (receiver, sender), vectors [E, 3] = r_sender - r_receiver
        in Angstrom, distances [E] in Angstrom.
    """
    candidates = structure_pairs(batch, num_structures)
    with torch.no_grad():
        candidate_vectors = positions[candidates[1]] - positions[candidates[0]]
        within = torch.linalg.vector_norm(candidate_vectors, dim=-1) < cutoff
    edge_index = candidates[:, within]
    vectors = positions[edge_index[1]] - positions[edge_index[0]]
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    return edge_index, vectors, distances
