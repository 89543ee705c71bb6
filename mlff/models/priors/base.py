"""The prior seam: physics added to the network's energy, one structure at a time.

A prior maps the atoms of a batch and their neighbour pairs to an energy per structure
[B] eV, float64. The energy model sums the network's energy and every prior's, and takes
forces as minus the gradient of that sum, so a prior that depends on positions (through
`edges.distances` or `positions`) contributes forces with no code of its own.
"""

import torch
from torch import nn

from mlff.models.neighbors import Edges

MAX_ATOMIC_NUMBER = 118


class Prior(nn.Module):
    """Base class of every prior.

    Subclasses are built as `Prior(species, cutoff, **options)` (species: the model's sorted
    atomic numbers; cutoff in Angstrom, the largest distance any edge has) and implement
    `forward`. Everything a prior needs at run time lives in its buffers, so it survives
    TorchScript export and a state dict restores it.
    """

    def __init__(self, species: list[int], cutoff: float) -> None:
        super().__init__()
        if sorted(set(species)) != list(species):
            raise ValueError(f"species must be sorted and unique, got {species}")
        if any(z < 1 or z > MAX_ATOMIC_NUMBER for z in species):
            raise ValueError(f"species must be atomic numbers 1..{MAX_ATOMIC_NUMBER}, got {species}")
        self.species: list[int] = [int(z) for z in species]
        self.cutoff = float(cutoff)

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        species: torch.Tensor,
        batch: torch.Tensor,
        edges: Edges,
        num_structures: int,
    ) -> torch.Tensor:
        """Energy [B] eV (float64) of each structure.

        Args:
            atomic_numbers: [N] long.
            species: [N] long, each atom's index in the model's species list.
            batch: [N] long, the structure of each atom (non-decreasing).
            edges: the neighbour pairs within the cutoff (both directions), with distances in Angstrom.
            num_structures: B.
        """
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-able description for a potential file's metadata (empty when the prior is off)."""
        return {}


def per_structure(values: torch.Tensor, owner: torch.Tensor, num_structures: int) -> torch.Tensor:
    """Sum `values` [K] (any float dtype) into their structures [B] as float64.

    Args:
        values: [K] energies, eV.
        owner: [K] the structure each value belongs to.
        num_structures: B.
    """
    total = torch.zeros(num_structures, dtype=torch.float64, device=values.device)
    return total.index_add(0, owner, values.to(torch.float64))
