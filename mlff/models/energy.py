"""The energy model: backbone + priors + forces by autograd.

This module is what a potential file holds. Its forward is file format v2 (v1's arguments, and
periodic structures allowed):

    forward(positions [N, 3] Angstrom, atomic_numbers [N], batch [N],
            cell [B, 3, 3] Angstrom, pbc [B, 3]) -> (energy [B] eV float64,
                                                       forces [N, 3] eV/Angstrom)
    energy_forces_stress(same arguments) -> (energy [B], forces [N, 3], stress [B, 3, 3] eV/A^3)

A batch with no periodic structure takes the all-pairs neighbour search of v1 unchanged (the MD
hot path); any periodic structure sends the batch through `periodic_neighbor_pairs`. The stress is
(1/V) dE/d(strain) for a symmetric strain applied to positions and cell alike (ASE's sign).

Energy = sum of scaled atomic outputs of the backbone (in the network dtype, float32 or
float64) + the energy of each prior (`mlff.models.priors`: per-element reference energies, a
core repulsion), summed in float64: a float32 total of -4,000 eV would move in 0.5 meV steps.
Forces are minus the gradient of that total.

The neighbour pairs, their distance encoding and cutoff envelope are computed here once per
call (`Edges`) and handed to the backbone and to every prior.
"""

from typing import Any, Optional

import torch
from torch import nn

from mlff.encodings.base import cosine_envelope
from mlff.export.inputs import check_inputs
from mlff.models.base import Backbone
from mlff.models.neighbors import Edges, neighbor_pairs, padded_neighbor_pairs, periodic_neighbor_pairs
from mlff.models.priors import CubicRepulsion, ElementReference, Prior
from mlff.models.priors.base import MAX_ATOMIC_NUMBER

# State-dict keys of models written before the priors existed -> their keys now.
LEGACY_KEYS = {
    "element_energies_nev": "priors.element_reference.energies_nev",
    "repulsion_onset": "priors.core_repulsion.onsets",
    "repulsion_strength": "priors.core_repulsion.strength",
}


def upgrade_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """An EnergyModel state dict of any mlff version in today's key names (a new dict).

    Models saved before the priors kept the reference energies and the core repulsion as buffers
    of the model itself (`LEGACY_KEYS`); those saved before the core repulsion lack it (it
    loads switched off, see `EnergyModel._load_from_state_dict`).
    """
    return {LEGACY_KEYS.get(key, key): value for key, value in state.items()}


class EnergyModel(nn.Module):
    """Backbone wrapped into a potential: neighbour search, energies, forces.

    Args:
        backbone: any registered backbone.
        species: the atomic numbers the model knows (sorted, unique).
        element_energies_ev: reference energy of each species, eV, same order
            (the "element_reference" prior).
        energy_scale_ev: the backbone's atomic outputs are multiplied by this (eV).
        priors: further priors by name, added after "element_reference" and "core_repulsion"
            (the latter built switched off; `set_core_repulsion` switches it on).
    """

    species: list[int]

    def __init__(
        self,
        backbone: Backbone,
        species: list[int],
        element_energies_ev: list[float],
        energy_scale_ev: float,
        priors: Optional[dict[str, Prior]] = None,
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
        for index, z in enumerate(species):
            table[z] = index
        self.register_buffer("species_table", table)
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale_ev)))
        self.priors = nn.ModuleDict(
            {
                "element_reference": ElementReference(self.species, self.cutoff, list(element_energies_ev)),
                "core_repulsion": CubicRepulsion(self.species, self.cutoff),
                **(priors or {}),
            }
        )

    def set_core_repulsion(self, onsets_a: torch.Tensor, strength_ev_per_a3: float) -> None:
        """Switch on the core repulsion: onsets_a [S, S] Angstrom (symmetric, species order), k in eV/A^3."""
        core_repulsion = self.priors["core_repulsion"]
        assert isinstance(core_repulsion, CubicRepulsion)
        core_repulsion.set(onsets_a, strength_ev_per_a3)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Old key names map to the priors'; models saved before the core repulsion load with it off.
        for old, new in LEGACY_KEYS.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        core_repulsion = self.priors["core_repulsion"]
        for name in ("onsets", "strength"):
            key = f"{prefix}priors.core_repulsion.{name}"
            state_dict.setdefault(key, torch.zeros_like(getattr(core_repulsion, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.jit.export
    def element_energies(self) -> torch.Tensor:
        """Reference energy per atomic number, [119] float64 eV (0 for unknown)."""
        reference = self.priors["element_reference"]
        assert isinstance(reference, ElementReference)
        return reference.energies()

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(positions, atomic_numbers, batch, cell, pbc)
        energy, forces, _ = self._evaluate(positions, atomic_numbers, batch, cell, pbc, False)
        return energy, forces

    @torch.jit.export
    def check_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> None:
        """Raise ValueError unless the arguments fit the forward's contract (`mlff.export.inputs`).

        The checks read tensor values, so on a GPU they wait for the device: an engine runs them once
        per system set-up and then steps with `energy_forces_unchecked`.
        """
        self._check_inputs(positions, atomic_numbers, batch, cell, pbc)

    @torch.jit.export
    def energy_forces_unchecked(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` without its input checks (arguments checked once by `check_inputs`), same numbers."""
        energy, forces, _ = self._evaluate(positions, atomic_numbers, batch, cell, pbc, False)
        return energy, forces

    def energy_forces_molecules(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, batch: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy [B] float64 eV and forces [N, 3] eV/A of isolated molecules (no pbc branch, no checks).

        The same operations as the forward of a batch without periodic structure, written without
        a branch on tensor values so that `torch.export` can trace it (the AOTInductor package).
        """
        num_structures = cell.size(0)
        positions = positions.detach().to(self.energy_scale.dtype).requires_grad_(True)
        species = self.species_table[atomic_numbers]
        index, vectors, distances = neighbor_pairs(positions, batch, num_structures, self.cutoff)
        edges = self._edges_from(index, vectors, distances, None)
        energy = self._energy(atomic_numbers, species, batch, edges, num_structures)
        (gradient,) = torch.autograd.grad([energy.sum()], [positions])
        return energy, -gradient

    def energy_forces_padded(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        num_structures: int,
        candidates: torch.Tensor,
        capacity: int,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy and forces of isolated molecules with shapes fixed by the batch alone (compiled MD;
        with `create_graph` the forces stay differentiable in the weights: compiled training).

        The pairs come from `padded_neighbor_pairs`: the candidates [2, P] (`structure_pairs`, built
        once per batch) cut to `capacity` entries, pairs beyond the cutoff sent to a ghost atom
        appended after the N real ones (its own structure B, dropped from the energy). Every shape
        depends on N, B, P and the capacity only, so the call traces into one static graph (no host
        synchronisation, CUDA-graph safe). The real atoms' edges are those of `forward`, in the same
        order: the numbers agree with it to rounding.

        Returns:
            energy [B] float64 eV, forces [N, 3] eV/A, and the number of pairs within the cutoff
            (a 0-d long tensor: more than `capacity` means pairs were lost and the capacity must grow).
        """
        dtype = self.energy_scale.dtype
        positions = positions.detach().to(dtype).requires_grad_(True)
        ghost = positions.size(0)
        ghost_number = torch.full((1,), self.species[0], dtype=atomic_numbers.dtype, device=atomic_numbers.device)
        numbers_ext = torch.cat([atomic_numbers, ghost_number])
        batch_ext = torch.cat([batch, torch.full((1,), num_structures, dtype=batch.dtype, device=batch.device)])
        positions_ext = torch.cat([positions, torch.zeros(1, 3, dtype=dtype, device=positions.device)])
        index, vectors, distances, count = padded_neighbor_pairs(
            positions_ext, candidates, self.cutoff, capacity, ghost
        )
        edges = self._edges_from(index, vectors, distances, None)
        species = self.species_table[numbers_ext]
        energy = self._energy(numbers_ext, species, batch_ext, edges, num_structures + 1)[:num_structures]
        (gradient,) = torch.autograd.grad([energy.sum()], [positions], create_graph=create_graph)
        return energy, -gradient, count

    @torch.jit.export
    def energy_forces_stress(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy [B] float64 eV, forces [N, 3] eV/A and stress [B, 3, 3] eV/A^3 of periodic structures.

        stress = (1/V) dE/d(strain), V = |det(cell)|, for a symmetric strain eps scaling positions
        and cell by (1 + eps) (ASE's convention: positive under tension). Every structure must be
        periodic along some axis and its cell non-singular (a slab's cell needs its vacuum vector).
        """
        self._check_inputs(positions, atomic_numbers, batch, cell, pbc)
        if not bool(pbc.any(dim=1).all()):
            raise ValueError("stress needs periodic structures: a structure of the batch has pbc all false")
        volume = torch.linalg.det(cell.to(torch.float64)).abs()
        if bool((volume <= 1e-12).any()):
            raise ValueError("stress needs a non-singular cell (its volume is zero); give a slab its vacuum vector")
        energy, forces, strain_gradient = self._evaluate(positions, atomic_numbers, batch, cell, pbc, True)
        stress = strain_gradient.to(torch.float64) / volume[:, None, None]
        return energy, forces, stress.to(forces.dtype)

    def _evaluate(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        with_stress: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy [B], forces [N, 3] and dE/d(strain) [B, 3, 3] eV (zeros unless with_stress).

        Forces are derivatives: under a caller's `torch.no_grad()` the energy would have no graph
        and the forces would be silently zero. Eager code enables gradients here; TorchScript has
        no `enable_grad`, so a scripted model (an exported file) refuses with a message instead.
        """
        if torch.jit.is_scripting():
            if not torch.is_grad_enabled():
                raise RuntimeError(
                    "mlff potential: forces are -dE/dx and need autograd; call it outside torch.no_grad()"
                )
        elif not torch.is_grad_enabled():
            # Not compiled into TorchScript (the branch above is what it keeps): eager Python only.
            with torch.enable_grad():
                return self._evaluate(positions, atomic_numbers, batch, cell, pbc, with_stress)
        num_structures = cell.size(0)
        dtype = self.energy_scale.dtype
        if positions.dtype != dtype or not positions.requires_grad:
            positions = positions.detach().to(dtype).requires_grad_(True)
        cell = cell.detach().to(dtype)
        strain = torch.zeros(num_structures, 3, 3, dtype=dtype, device=positions.device)
        strained = positions
        if with_stress:
            strain.requires_grad_(True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            strained = positions + torch.bmm(positions.unsqueeze(1), symmetric[batch]).squeeze(1)
            cell = cell + torch.bmm(cell, symmetric)
        species = self.species_table[atomic_numbers]
        edges = self.edges(strained, batch, num_structures, cell, pbc)
        energy = self._energy(atomic_numbers, species, batch, edges, num_structures)
        forces = torch.zeros_like(positions)
        strain_gradient = torch.zeros_like(strain)
        if energy.requires_grad:
            inputs = [positions, strain] if with_stress else [positions]
            gradients = torch.autograd.grad([energy.sum()], inputs, create_graph=self.training, allow_unused=True)
            gradient: Optional[torch.Tensor] = gradients[0]
            if gradient is not None:
                forces = -gradient
            if with_stress:
                strain_derivative: Optional[torch.Tensor] = gradients[1]
                if strain_derivative is not None:
                    strain_gradient = strain_derivative
        return energy, forces, strain_gradient

    def edges(
        self,
        positions: torch.Tensor,
        batch: torch.Tensor,
        num_structures: int,
        cell: Optional[torch.Tensor] = None,
        pbc: Optional[torch.Tensor] = None,
    ) -> Edges:
        """The pairs within the cutoff with their distance encoding and envelope, computed once per call.

        With a cell [B, 3, 3] and pbc [B, 3] of which some entry is true, pairs across periodic
        boundaries too (`periodic_neighbor_pairs`; `Edges.shifts` holds their lattice translations).
        """
        shifts: Optional[torch.Tensor] = None
        if cell is not None and pbc is not None and bool(pbc.any()):
            index, shifts, vectors, distances = periodic_neighbor_pairs(
                positions, batch, num_structures, self.cutoff, cell, pbc.to(torch.bool)
            )
        else:
            index, vectors, distances = neighbor_pairs(positions, batch, num_structures, self.cutoff)
        return self._edges_from(index, vectors, distances, shifts)

    def _edges_from(
        self, index: torch.Tensor, vectors: torch.Tensor, distances: torch.Tensor, shifts: Optional[torch.Tensor]
    ) -> Edges:
        """The pairs with their cutoff envelope and distance encoding."""
        envelope = cosine_envelope(distances, self.cutoff)
        encoded = self.backbone.encoding.with_envelope(distances, envelope)
        return Edges(index, vectors, distances, encoded, envelope, shifts)

    def _energy(
        self,
        atomic_numbers: torch.Tensor,
        species: torch.Tensor,
        batch: torch.Tensor,
        edges: Edges,
        num_structures: int,
    ) -> torch.Tensor:
        """[B] float64 eV: the scaled backbone outputs summed per structure, plus every prior."""
        atomic = self.backbone(species, edges) * self.energy_scale
        energy = torch.zeros(num_structures, dtype=torch.float64, device=species.device).index_add(
            0, batch, atomic.to(torch.float64)
        )
        for prior in self.priors.values():
            energy = energy + prior(atomic_numbers, species, batch, edges, num_structures)
        return energy

    def _check_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> None:
        check_inputs(self.species_table, self.species, positions, atomic_numbers, batch, cell, pbc)
