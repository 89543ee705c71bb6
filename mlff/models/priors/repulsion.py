"""A cubic core repulsion: guards the short distances a model never saw.

A learned potential is free to be attractive where its training frames have no pairs (two
hydrogens 1 A apart), and MD that wanders there collapses. With onsets r0[a, b] (Angstrom, per
pair of species, `mlff.models.priors.onsets.pair_onsets`: the shortest distance of that pair in
the training frames, or a covalent-radii floor for a pair that never comes within the cutoff)
and a strength k (eV/A^3), each pair closer than r0 adds k (r0 - r)^3: zero, with zero force
and zero curvature, at and beyond r0, so the training frames see none of it. All onsets 0 or
k = 0 (the default) switch it off.
"""

import torch

from mlff.models.neighbors import Edges
from mlff.models.priors.base import Prior, per_structure


def check_onsets(onsets_a: torch.Tensor, count: int, cutoff: float) -> None:
    """Refuse onsets that are not [count, count], symmetric and in [0, cutoff) Angstrom.

    An onset at or beyond the cutoff would switch a repulsion on for pairs the model's edges never
    hold (`mlff.models.priors.onsets.pair_onsets` clamps them inside).
    """
    if onsets_a.shape != (count, count):
        raise ValueError(f"onsets must have shape [{count}, {count}] (species x species), got {list(onsets_a.shape)}")
    if not torch.equal(onsets_a, onsets_a.T) or bool((onsets_a < 0).any()) or bool((onsets_a >= cutoff).any()):
        raise ValueError(f"onsets must be symmetric and lie in [0, cutoff = {cutoff}) Angstrom")


class CubicRepulsion(Prior):
    """E = sum over pairs closer than r0[a, b] of k (r0 - r)^3.

    Args:
        species: the model's atomic numbers (sorted, unique).
        cutoff: the model's cutoff, Angstrom; every onset must lie in [0, cutoff).
        onsets_a: [S, S] symmetric onsets in species order, Angstrom (default: all 0, off).
        strength_ev_per_a3: k >= 0, eV/A^3 (default 0, off).
    """

    def __init__(
        self,
        species: list[int],
        cutoff: float,
        onsets_a: torch.Tensor | None = None,
        strength_ev_per_a3: float = 0.0,
    ) -> None:
        super().__init__(species, cutoff)
        count = len(species)
        self.register_buffer("onsets", torch.zeros(count, count))
        self.register_buffer("strength", torch.zeros(()))
        if onsets_a is not None:
            self.set(torch.as_tensor(onsets_a), strength_ev_per_a3)

    def set(self, onsets_a: torch.Tensor, strength_ev_per_a3: float) -> None:
        """Set the onsets [S, S] Angstrom (symmetric, species order, in [0, cutoff)) and k in eV/A^3."""
        check_onsets(onsets_a, len(self.species), self.cutoff)
        if strength_ev_per_a3 < 0:
            raise ValueError(f"the core repulsion strength must be >= 0 eV/A^3, got {strength_ev_per_a3}")
        self.onsets.copy_(onsets_a)
        self.strength.fill_(float(strength_ev_per_a3))

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        species: torch.Tensor,
        batch: torch.Tensor,
        edges: Edges,
        num_structures: int,
    ) -> torch.Tensor:
        receiver, sender = edges.index[0], edges.index[1]
        onset = self.onsets[species[receiver], species[sender]].to(edges.distances.dtype)
        # Each pair appears as two directed edges: half the pair energy each.
        pair_energy = 0.5 * self.strength.to(edges.distances.dtype) * torch.relu(onset - edges.distances).pow(3)
        return per_structure(pair_energy, batch[receiver], num_structures)

    def describe(self) -> dict:
        if float(self.strength) == 0.0 or not bool(self.onsets.any()):
            return {}
        return {
            "strength_ev_per_a3": float(self.strength),
            "species": list(self.species),
            "onsets_a": self.onsets.double().round(decimals=6).tolist(),
        }
