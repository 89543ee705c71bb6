"""Accuracy of any v1 callable (eager model or loaded potential) on labelled frames."""

from typing import Callable

import numpy as np
import torch

from mlff.data.batch import FrameTensors
from mlff.units import EV_TO_MEV

PotentialCallable = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def evaluate(
    potential: PotentialCallable,
    data: FrameTensors,
    frame_indices: np.ndarray,
    batch_size: int = 64,
) -> dict[str, float]:
    """Energy and force errors of `potential` on the given frames.

    Args:
        potential: called as potential(positions, atomic_numbers, batch, cell, pbc)
            -> (energy [B] eV, forces [N, 3] eV/A).
        data: the labelled frames as tensors.
        frame_indices: frames to evaluate.
        batch_size: structures per call.

    Returns:
        energy_mae_mev, energy_rmse_mev, energy_mae_mev_per_atom, force_mae_mev_per_a,
        force_rmse_mev_per_a (over force components), frames.
    """
    energy_errors, per_atom_errors, force_errors = [], [], []
    for batch in data.batches(np.asarray(frame_indices), batch_size):
        energy, forces = potential(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
        energy_error = (energy.detach().to(torch.float64) - batch.energies).cpu()
        energy_errors.append(energy_error)
        per_atom_errors.append(energy_error / batch.n_atoms.cpu())
        force_errors.append((forces.detach().to(torch.float64) - batch.forces.to(torch.float64)).reshape(-1).cpu())
    energy_error = torch.cat(energy_errors)
    per_atom = torch.cat(per_atom_errors)
    force_error = torch.cat(force_errors)
    return {
        "frames": int(energy_error.numel()),
        "energy_mae_mev": float(energy_error.abs().mean()) * EV_TO_MEV,
        "energy_rmse_mev": float(energy_error.pow(2).mean().sqrt()) * EV_TO_MEV,
        "energy_mae_mev_per_atom": float(per_atom.abs().mean()) * EV_TO_MEV,
        "force_mae_mev_per_a": float(force_error.abs().mean()) * EV_TO_MEV,
        "force_rmse_mev_per_a": float(force_error.pow(2).mean().sqrt()) * EV_TO_MEV,
    }
