"""The backbone seam: atoms and their neighbour pairs -> per-atom energies."""

import torch
from torch import nn

from mlff.encodings.base import DistanceEncoding


class Backbone(nn.Module):
    """Base class of every backbone.

    A backbone takes any `DistanceEncoding` and maps species indices [N],
    pair indices [2, E] (receiver, sender), pair vectors [E, 3] (Angstrom,
    sender minus receiver) and distances [E] (Angstrom) to per-atom outputs [N]
    (dimensionless; the energy model scales them to eV).
    """

    def __init__(self, num_species: int, encoding: DistanceEncoding) -> None:
        super().__init__()
        if num_species < 1:
            raise ValueError(f"a backbone needs at least one species, got {num_species}")
        self.num_species = int(num_species)
        self.encoding = encoding
        self.cutoff = float(encoding.cutoff)

    def forward(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError


def check_heads(hidden: int, heads: int) -> None:
    """Raise ValueError unless `hidden` splits evenly into `heads` attention heads."""
    if heads < 1 or hidden % heads != 0:
        raise ValueError(f"hidden ({hidden}) must be a positive multiple of heads ({heads})")
