"""A ZBL screened nuclear repulsion, switched off smoothly at each element pair's onset.

The universal screened Coulomb repulsion of Ziegler, Biersack and Littmark (1985): two nuclei of
charges Z_i, Z_j at distance r repel with

    E_ZBL(r) = k_e e^2 Z_i Z_j / r * phi(r / a),    a = 0.46850 / (Z_i^0.23 + Z_j^0.23) Angstrom,
    phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x} + 0.02817 e^{-0.20162 x},

k_e e^2 = 14.399645 eV Angstrom (`mlff.units.COULOMB_EV_ANGSTROM`). Unlike the cubic core
repulsion it has the physical shape and size at short range (it diverges as 1/r, so no MD step
can push two nuclei through each other) and no strength to choose.

To leave the training frames untouched it is multiplied by a switch s(r): 1 below an inner
radius r_in = inner_fraction x r0 and 0 at and beyond the pair's onset r0 (`pair_onsets`: the
shortest distance seen in the training frames, or a covalent-radii floor), the quintic
smoothstep in between, t = (r - r_in) / (r0 - r_in):

    s(t) = 1 - t^3 (10 - 15 t + 6 t^2),   s(0) = 1, s(1) = 0, s' = s'' = 0 at both ends,

so energy, force and force derivative are continuous everywhere and exactly zero at and beyond
r0. Pairs at or beyond their onset are not evaluated at all (not merely multiplied by zero), so
they contribute exactly 0 energy and 0 force whatever their distance.
"""

import torch

from mlff.models.neighbors import Edges
from mlff.models.priors.base import Prior, per_structure
from mlff.models.priors.repulsion import check_onsets
from mlff.units import COULOMB_EV_ANGSTROM

ZBL_SCREENING_LENGTH_A = 0.46850
ZBL_SCREENING_EXPONENT = 0.23
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
DEFAULT_INNER_FRACTION = 0.5


class ZBLRepulsion(Prior):
    """E = sum over pairs closer than r0[a, b] of E_ZBL(r) s(r) (module docstring).

    Args:
        species: the model's atomic numbers (sorted, unique).
        cutoff: the model's cutoff, Angstrom; every onset must lie in [0, cutoff).
        onsets_a: [S, S] symmetric onsets in species order, Angstrom (default: all 0, off).
        inner_fraction: r_in / r0 in [0, 1): the full ZBL energy below r_in, the switch between
            r_in and r0 (default 0.5).
    """

    def __init__(
        self,
        species: list[int],
        cutoff: float,
        onsets_a: torch.Tensor | None = None,
        inner_fraction: float = DEFAULT_INNER_FRACTION,
    ) -> None:
        super().__init__(species, cutoff)
        count = len(species)
        # Buffers, not module globals: TorchScript reads no Python tuples, and a state dict restores them.
        self.register_buffer("onsets", torch.zeros(count, count))
        self.register_buffer("inner_fraction", torch.zeros(()))
        self.register_buffer("phi_coefficients", torch.tensor(ZBL_COEFFICIENTS))
        self.register_buffer("phi_exponents", torch.tensor(ZBL_EXPONENTS))
        self.coulomb_ev_a = float(COULOMB_EV_ANGSTROM)
        self.screening_length_a = float(ZBL_SCREENING_LENGTH_A)
        self.screening_exponent = float(ZBL_SCREENING_EXPONENT)
        self.set(torch.zeros(count, count) if onsets_a is None else torch.as_tensor(onsets_a), inner_fraction)

    def set(self, onsets_a: torch.Tensor, inner_fraction: float = DEFAULT_INNER_FRACTION) -> None:
        """Set the onsets [S, S] Angstrom (symmetric, species order, in [0, cutoff)) and r_in / r0 in [0, 1)."""
        check_onsets(onsets_a, len(self.species), self.cutoff)
        if not 0.0 <= inner_fraction < 1.0:
            raise ValueError(f"the ZBL switch's inner fraction r_in / r0 must lie in [0, 1), got {inner_fraction}")
        self.onsets.copy_(onsets_a)
        self.inner_fraction.fill_(float(inner_fraction))

    def pair_energy(self, distances: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        """Unswitched E_ZBL [K] eV of pairs at distances [K] Angstrom with atomic numbers z_i, z_j [K]."""
        charge_i, charge_j = z_i.to(distances.dtype), z_j.to(distances.dtype)
        screening = self.screening_length_a / (
            charge_i.pow(self.screening_exponent) + charge_j.pow(self.screening_exponent)
        )
        x = (distances / screening)[:, None]
        coefficients = self.phi_coefficients.to(distances.dtype)
        exponents = self.phi_exponents.to(distances.dtype)
        phi = (coefficients * torch.exp(-exponents * x)).sum(dim=1)
        return self.coulomb_ev_a * charge_i * charge_j / distances * phi

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
        # Only pairs inside their onset are evaluated: the others contribute exactly nothing.
        close = edges.distances < onset
        receiver, sender = receiver[close], sender[close]
        distances, onset = edges.distances[close], onset[close]
        inner = self.inner_fraction.to(distances.dtype) * onset
        t = ((distances - inner) / (onset - inner)).clamp(0.0, 1.0)
        switch = 1.0 - t.pow(3) * (10.0 - 15.0 * t + 6.0 * t.pow(2))
        energy = self.pair_energy(distances, atomic_numbers[receiver], atomic_numbers[sender]) * switch
        # Each pair appears as two directed edges: half the pair energy each.
        return per_structure(0.5 * energy, batch[receiver], num_structures)

    def describe(self) -> dict:
        if not bool(self.onsets.any()):
            return {}
        return {
            "species": list(self.species),
            "onsets_a": self.onsets.double().round(decimals=6).tolist(),
            "inner_fraction": float(self.inner_fraction),
        }
