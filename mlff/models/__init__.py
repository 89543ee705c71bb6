"""Backbones behind one interface (`Backbone`), a registry, and the model factory.

Adding a backbone: write the class, add one line to `BACKBONES`.
"""

from collections.abc import Sequence

import torch

from mlff.encodings import build_encoding
from mlff.models.base import Backbone
from mlff.models.config import ModelConfig
from mlff.models.egnn import EGNN
from mlff.models.energy import EnergyModel
from mlff.models.et import EquivariantTransformer
from mlff.models.transformer import Transformer
from mlff.utils import dtype_map

BACKBONES: dict[str, type[Backbone]] = {
    "egnn": EGNN,
    "transformer": Transformer,
    "et": EquivariantTransformer,
}

# The one dtype map (mlff.utils), under the name the trainer imports.
DTYPES: dict[str, torch.dtype] = dtype_map()


def build_model(
    config: ModelConfig,
    species: Sequence[int],
    element_energies_ev: Sequence[float],
    energy_scale_ev: float = 1.0,
) -> EnergyModel:
    """Build an energy model from its config (the one factory every caller uses).

    Args:
        config: architecture.
        species: atomic numbers the model knows (sorted, unique).
        element_energies_ev: reference energy per species, eV.
        energy_scale_ev: scale of the backbone's atomic outputs, eV.
    """
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; known: {sorted(BACKBONES)}")
    if "polarization" in config.backbone_options and not BACKBONES[config.backbone].VECTOR_FEATURES:
        capable = sorted(name for name, cls in BACKBONES.items() if cls.VECTOR_FEATURES)
        raise ValueError(
            f"backbone_options.polarization needs a backbone with equivariant vector features "
            f"({', '.join(capable)}); {config.backbone!r} has none"
        )
    encoding = build_encoding(config.encoding, config.encoding_size, config.cutoff, **config.encoding_options)
    try:
        backbone = BACKBONES[config.backbone](num_species=len(species), encoding=encoding, **config.backbone_options)
    except TypeError as error:
        raise ValueError(f"bad options for backbone {config.backbone!r}: {error}") from None
    model = EnergyModel(backbone, list(species), list(element_energies_ev), energy_scale_ev)
    return model.to(DTYPES[config.dtype])


__all__ = [
    "BACKBONES",
    "DTYPES",
    "Backbone",
    "EGNN",
    "EnergyModel",
    "EquivariantTransformer",
    "ModelConfig",
    "Transformer",
    "build_model",
]
