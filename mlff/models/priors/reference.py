"""Per-element reference energies: E_ref = sum over atoms of e[z_i], a constant of the composition."""

import torch

from mlff.models.neighbors import Edges
from mlff.models.priors.base import MAX_ATOMIC_NUMBER, Prior, per_structure

# Kept as integer nano-eV: Module.to(torch.float32) on a loaded potential converts every floating
# buffer and would round them to float32 (0.5 meV steps at -4,000 eV); an integer buffer only
# changes device.
NANO_EV_PER_EV = 1.0e9


class ElementReference(Prior):
    """The energy zero of each element (fitted on the training frames, not trained).

    Args:
        species: the model's atomic numbers (sorted, unique).
        cutoff: unused (the prior has no pair term); part of every prior's constructor.
        energies_ev: reference energy of each species, eV, same order (default: all 0).
    """

    def __init__(self, species: list[int], cutoff: float, energies_ev: list[float] | None = None) -> None:
        super().__init__(species, cutoff)
        energies_ev = [0.0] * len(species) if energies_ev is None else list(energies_ev)
        if len(energies_ev) != len(species):
            raise ValueError("one reference energy per species is needed")
        table = torch.zeros(MAX_ATOMIC_NUMBER + 1, dtype=torch.int64)
        for z, energy in zip(species, energies_ev):
            table[z] = int(round(float(energy) * NANO_EV_PER_EV))
        self.register_buffer("energies_nev", table)

    @torch.jit.export
    def energies(self) -> torch.Tensor:
        """Reference energy per atomic number, [119] float64 eV (0 for unknown elements)."""
        return self.energies_nev.to(torch.float64) * 1.0e-9  # NANO_EV_PER_EV; TorchScript reads no globals

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        species: torch.Tensor,
        batch: torch.Tensor,
        edges: Edges,
        num_structures: int,
    ) -> torch.Tensor:
        return per_structure(self.energies()[atomic_numbers], batch, num_structures)

    def describe(self) -> dict:
        table = self.energies()
        return {"energies_ev": {str(z): float(table[z]) for z in self.species}}
