"""The backbone seam: atoms and their neighbour pairs -> per-atom energies."""

import torch
from torch import nn

from mlff.encodings.base import DistanceEncoding
from mlff.models.neighbors import Edges


class Backbone(nn.Module):
    """Base class of every backbone.

    A backbone is built for any `DistanceEncoding` (it holds it as `encoding`: its layer
    widths follow `encoding.size`, and the encoding's weights are trained with it) and maps
    species indices [N] and the neighbour pairs `Edges` (indices, vectors and distances in
    Angstrom, the encoded distances [E, s] and cutoff envelope [E]) to per-atom outputs [N]
    (dimensionless; the energy model scales them to eV). The energy model evaluates the
    encoding and the envelope once per call and hands them in `edges`.

    `VECTOR_FEATURES` says whether the backbone carries equivariant vector features per atom
    (options built on them, such as `polarization`, are refused for backbones without them).
    """

    VECTOR_FEATURES = False

    def __init__(self, num_species: int, encoding: DistanceEncoding) -> None:
        super().__init__()
        if num_species < 1:
            raise ValueError(f"a backbone needs at least one species, got {num_species}")
        self.num_species = int(num_species)
        self.encoding = encoding
        self.cutoff = float(encoding.cutoff)

    def forward(self, species: torch.Tensor, edges: Edges) -> torch.Tensor:
        """Per-atom outputs [N] of species indices [N] and the neighbour pairs."""
        raise NotImplementedError


def check_heads(hidden: int, heads: int) -> None:
    """Raise ValueError unless `hidden` splits evenly into `heads` attention heads."""
    if heads < 1 or hidden % heads != 0:
        raise ValueError(f"hidden ({hidden}) must be a positive multiple of heads ({heads})")
