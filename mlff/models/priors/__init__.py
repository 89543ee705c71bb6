"""Priors behind one interface (`Prior`) and a registry: physics added to the network's energy.

Each prior maps a batch's atoms and neighbour pairs to an energy per structure [B] eV; the
energy model adds them all (`EnergyModel.priors`) and differentiates the sum for forces.
Adding a prior: write the class in its own module (constructor `(species, cutoff, **options)`),
add one line to `PRIORS`.
"""

from mlff.models.priors.base import Prior
from mlff.models.priors.onsets import PairOnsets, pair_onsets
from mlff.models.priors.reference import ElementReference
from mlff.models.priors.repulsion import CubicRepulsion
from mlff.models.priors.zbl import ZBLRepulsion

PRIORS: dict[str, type[Prior]] = {
    "element_reference": ElementReference,
    "core_repulsion": CubicRepulsion,
    "zbl_repulsion": ZBLRepulsion,
}


def build_prior(name: str, species: list[int], cutoff: float, **options: object) -> Prior:
    """The registered prior `name` for these species (atomic numbers) and cutoff (Angstrom)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; known: {sorted(PRIORS)}")
    return PRIORS[name](species, cutoff, **options)


__all__ = [
    "PRIORS",
    "CubicRepulsion",
    "ElementReference",
    "PairOnsets",
    "Prior",
    "ZBLRepulsion",
    "build_prior",
    "pair_onsets",
]
