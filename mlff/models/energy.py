"""The energy model: backbone + per-element reference energies + forces by autograd.

This module is what a potential file holds. Its forward is file format v1:

    forward(positions [N, 3] Angstrom, atomic_numbers [N], batch [N],
            cell [B, 3, 3] Angstrom, pbc [B, 3]) -> (energy [B] eV float64,
                                                       forces [N, 3] eV/Angstrom)

Energy = sum of scaled atomic outputs of the backbone (in the network dtype,
float32 or float64) + an optional core repulsion + per-element reference energies
added in float64: a float32 total of -4,000 eV would move in 0.5 meV steps.

The core repulsion guards the distances a model never saw. A learned potential is
free to be attractive where its training frames have no pairs (two hydrogens 1 A
apart), and MD that wanders there collapses. With onsets r0[a, b] (Angstrom, per
pair of species, e.g. the shortest distance of that pair in the training frames,
`mlff.data.reference.shortest_pair_distances`) and a strength k (eV/A^3), each pair
closer than r0 adds k (r0 - r)^3: zero, with zero force and zero curvature, at and
beyond r0, so the training frames see none of it. All onsets 0 (the default) switch it off.
"""

from typing import Optional

import torch
from torch import nn

from mlff.models.base import Backbone
from mlff.models.neighbors import neighbor_pairs

MAX_ATOMIC_NUMBER = 118
# Reference energies are kept as integer nano-eV: Module.to(torch.float32) on a
# loaded potential converts every floating buffer, and would round them to
# float32 (0.5 meV steps at -4,000 eV); an integer buffer only changes device.
NANO_EV_PER_EV = 1.0e9


class EnergyModel(nn.Module):
    """Backbone wrapped into a potential: neighbour search, energies, forces.

    Args:
        backbone: any registered backbone.
        species: the atomic numbers the model knows (sorted, unique).
        element_energies_ev: reference energy of each species, eV, same order.
        energy_scale_ev: the backbone's atomic outputs are multiplied by this (eV).
    """

    species: list[int]

    def __init__(
        self,
        backbone: Backbone,
        species: list[int],
        element_energies_ev: list[float],
        energy_scale_ev: float,
    ) -> None:
        super().__init__()
        if sorted(set(species)) != list(species):
            raise ValueError(f"species must be sorted and unique, got {species}")
        if len(element_energies_ev) != len(species):
            raise ValueError("one reference energy per species is needed")
        if any(z < 1 or z > MAX_ATOMIC_NUMBER for z in species):
            raise ValueError(f"species must be atomic numbers 1..{MAX_ATOMIC_NUMBER}, got {species}")
        self.backbone = backbone
        self.cutoff = float(backbone.cutoff)
        self.species: list[int] = [int(z) for z in species]
        table = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        references = torch.zeros(MAX_ATOMIC_NUMBER + 1, dtype=torch.int64)
        for index, (z, energy) in enumerate(zip(species, element_energies_ev)):
            table[z] = index
            references[z] = int(round(float(energy) * NANO_EV_PER_EV))
        self.register_buffer("species_table", table)
        self.register_buffer("element_energies_nev", references)
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale_ev)))
        self.register_buffer("repulsion_onset", torch.zeros(len(species), len(species)))
        self.register_buffer("repulsion_strength", torch.zeros(()))

    def set_core_repulsion(self, onsets_a: torch.Tensor, strength_ev_per_a3: float) -> None:
        """Switch on the core repulsion: onsets_a [S, S] Angstrom (symmetric, species order), k in eV/A^3."""
        count = len(self.species)
        if onsets_a.shape != (count, count):
            raise ValueError(
                f"onsets must have shape [{count}, {count}] (species x species), got {list(onsets_a.shape)}"
            )
        if not torch.equal(onsets_a, onsets_a.T) or bool((onsets_a < 0).any()) or bool((onsets_a >= self.cutoff).any()):
            raise ValueError(f"onsets must be symmetric and lie in [0, cutoff = {self.cutoff}) Angstrom")
        if strength_ev_per_a3 < 0:
            raise ValueError(f"the core repulsion strength must be >= 0 eV/A^3, got {strength_ev_per_a3}")
        self.repulsion_onset.copy_(onsets_a)
        self.repulsion_strength.fill_(float(strength_ev_per_a3))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Checkpoints written before the core repulsion existed have no such buffers: they load with it off.
        for name in ("repulsion_onset", "repulsion_strength"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.jit.export
    def element_energies(self) -> torch.Tensor:
        """Reference energy per atomic number, [119] float64 eV (0 for unknown)."""
        return self.element_energies_nev.to(torch.float64) * 1.0e-9

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(positions, atomic_numbers, batch, cell, pbc)
        num_structures = cell.size(0)
        dtype = self.energy_scale.dtype
        if positions.dtype != dtype or not positions.requires_grad:
            positions = positions.detach().to(dtype).requires_grad_(True)
        species = self.species_table[atomic_numbers]
        edge_index, vectors, distances = neighbor_pairs(positions, batch, num_structures, self.cutoff)
        atomic = self.backbone(species, edge_index, vectors, distances) * self.energy_scale
        atomic = atomic + self._core_repulsion(species, edge_index, distances)
        network_energy = torch.zeros(num_structures, dtype=dtype, device=positions.device).index_add(0, batch, atomic)
        forces = torch.zeros_like(positions)
        if network_energy.requires_grad:
            gradients = torch.autograd.grad(
                [network_energy.sum()], [positions], create_graph=self.training, allow_unused=True
            )
            gradient: Optional[torch.Tensor] = gradients[0]
            if gradient is not None:
                forces = -gradient
        references = self.element_energies()[atomic_numbers]
        reference_energy = torch.zeros(num_structures, dtype=torch.float64, device=positions.device).index_add(
            0, batch, references
        )
        return network_energy.to(torch.float64) + reference_energy, forces

    def _core_repulsion(self, species: torch.Tensor, edge_index: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """Atomic energies [N] eV of the core repulsion; each pair appears as two directed edges, half each."""
        onset = self.repulsion_onset[species[edge_index[0]], species[edge_index[1]]]
        pair_energy = 0.5 * self.repulsion_strength * torch.relu(onset - distances).pow(3)
        return torch.zeros(species.size(0), dtype=distances.dtype, device=distances.device).index_add(
            0, edge_index[0], pair_energy
        )

    def _check_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> None:
        if positions.dim() != 2 or positions.size(1) != 3:
            raise ValueError("positions must have shape [N, 3], got " + str(list(positions.shape)))
        num_atoms = positions.size(0)
        if atomic_numbers.shape != (num_atoms,) or batch.shape != (num_atoms,):
            raise ValueError(
                "atomic_numbers and batch must have shape [N] = ["
                + str(num_atoms)
                + "], got "
                + str(list(atomic_numbers.shape))
                + " and "
                + str(list(batch.shape))
            )
        if cell.dim() != 3 or cell.size(1) != 3 or cell.size(2) != 3:
            raise ValueError("cell must have shape [B, 3, 3], got " + str(list(cell.shape)))
        if pbc.dim() != 2 or pbc.size(0) != cell.size(0) or pbc.size(1) != 3:
            raise ValueError("pbc must have shape [B, 3] matching cell, got " + str(list(pbc.shape)))
        if bool(pbc.any()):
            raise ValueError("periodic boundary conditions are not supported by potential format v1")
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("positions contain NaN or inf")
        if num_atoms == 0:
            return
        if bool((atomic_numbers < 0).any()) or bool((atomic_numbers >= self.species_table.size(0)).any()):
            raise ValueError("atomic numbers must lie in 0..118")
        unknown = self.species_table[atomic_numbers] < 0
        if bool(unknown.any()):
            bad = int(atomic_numbers[unknown][0])
            raise ValueError("atomic number " + str(bad) + " is not among the potential's species " + str(self.species))
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch must be non-decreasing (atoms of each structure contiguous)")
        if int(batch[0]) < 0 or int(batch[-1]) >= cell.size(0):
            raise ValueError("batch indices must lie in [0, B) with B = cell.shape[0]")
