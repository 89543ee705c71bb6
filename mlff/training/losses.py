"""Loss terms behind one interface and a registry.

Each term maps (model, batch, predicted energy [B] eV, predicted forces [N, 3]
eV/A) to a scalar; the trainer adds them with the weights of
`train.loss_weights`. Adding a term: write the function, add one line to LOSSES.
"""

from collections.abc import Callable

import torch

from mlff.data.batch import Batch
from mlff.models.energy import EnergyModel

LossTerm = Callable[[EnergyModel, Batch, torch.Tensor, torch.Tensor], torch.Tensor]


def energy_mse(model: EnergyModel, batch: Batch, energy: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
    """Mean squared error of total energies, eV^2."""
    return (energy - batch.energies).pow(2).mean()


def force_mse(model: EnergyModel, batch: Batch, energy: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
    """Mean squared error of force components, (eV/A)^2."""
    return (forces - batch.forces).pow(2).mean()


def smoothness(model: EnergyModel, batch: Batch, energy: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
    """The distance encoding's regulariser (the spline's smoothness loss; 0 for the others)."""
    return model.backbone.encoding.regularization()


LOSSES: dict[str, LossTerm] = {
    "energy": energy_mse,
    "forces": force_mse,
    "smoothness": smoothness,
}


def check_loss_weights(weights: dict[str, float]) -> None:
    """Raise ValueError naming any weight whose term is not registered."""
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown} in train.loss_weights; known: {sorted(LOSSES)}")


def total_loss(
    weights: dict[str, float], model: EnergyModel, batch: Batch, energy: torch.Tensor, forces: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms with a non-zero weight, and each term's value."""
    total = torch.zeros((), dtype=torch.float64, device=energy.device)
    parts: dict[str, float] = {}
    for name, weight in weights.items():
        if weight == 0.0:
            continue
        value = LOSSES[name](model, batch, energy, forces)
        parts[name] = float(value.detach())
        total = total + weight * value.to(torch.float64)
    return total, parts
