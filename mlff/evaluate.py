"""Accuracy of any v1 callable (eager model or loaded potential) on labelled frames.

`evaluate_file` takes a potential file or a training checkpoint; the split is
the one the model was trained with when the file records it (config["data"] of
a checkpoint, metadata["training"]["config"]["data"] of a potential).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff.data import read_frames
from mlff.data.batch import FrameTensors
from mlff.data.splits import SPLITS, select_frames, split_settings
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
        energy_mae_mev, energy_rmse_mev, energy_mae_mev_per_atom (over the frames with an energy
        label: NaN if none has one), force_mae_mev_per_a, force_rmse_mev_per_a (over force
        components of every frame; an equilibrium frame's label is zero force), frames,
        frames_with_energy.
    """
    energy_errors, per_atom_errors, force_errors = [], [], []
    for batch in data.batches(np.asarray(frame_indices), batch_size):
        energy, forces = potential(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
        # A frame without an energy label (an equilibrium frame of another method) stores 0: no error to count.
        labelled = batch.has_energy.cpu()
        energy_error = (energy.detach().to(torch.float64) - batch.energies).cpu()[labelled]
        energy_errors.append(energy_error)
        per_atom_errors.append(energy_error / batch.n_atoms.cpu()[labelled])
        force_errors.append((forces.detach().to(torch.float64) - batch.forces.to(torch.float64)).reshape(-1).cpu())
    energy_error = torch.cat(energy_errors)
    per_atom = torch.cat(per_atom_errors)
    force_error = torch.cat(force_errors)
    return {
        "frames": int(np.asarray(frame_indices).size),
        "frames_with_energy": int(energy_error.numel()),
        "energy_mae_mev": float(energy_error.abs().mean()) * EV_TO_MEV,
        "energy_rmse_mev": float(energy_error.pow(2).mean().sqrt()) * EV_TO_MEV,
        "energy_mae_mev_per_atom": float(per_atom.abs().mean()) * EV_TO_MEV,
        "force_mae_mev_per_a": float(force_error.abs().mean()) * EV_TO_MEV,
        "force_rmse_mev_per_a": float(force_error.pow(2).mean().sqrt()) * EV_TO_MEV,
    }


def evaluate_file(
    model_path: str | Path,
    data_path: str | Path,
    split: str = "test",
    split_index: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    weights: str = "ema",
) -> dict[str, Any]:
    """Errors of a potential file or checkpoint on one split of a dataset.

    Args:
        model_path: a potential file or a training checkpoint.
        data_path: a dataset `read_frames` reads.
        split: "test", "val", "train" or "all".
        split_index: overrides the recorded split index (None: the recorded one, else 0).
        batch_size: structures per call.
        device: torch device.
        weights: "ema" or "raw" (checkpoints only).

    Returns:
        The metrics of `mlff.evaluate.evaluate` (meV, meV/A) plus model, kind,
        data, split and split_settings.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model, kind, data_config = load_evaluation_model(model_path, device, weights)
    settings = split_settings(data_config)
    if split_index is not None:
        settings["split_index"] = split_index
    frames = read_frames(data_path)
    indices = select_frames(frames, split, settings)
    metrics = evaluate(model, FrameTensors(frames, torch.float64, device), indices, batch_size)
    return {
        "model": str(model_path),
        "kind": kind,
        "data": str(data_path),
        "split": split,
        "split_settings": settings,
        **metrics,
    }


def load_evaluation_model(
    path: str | Path, device: str, weights: str = "ema"
) -> tuple[PotentialCallable, str, dict[str, Any]]:
    """A v1 callable from a potential file or a training checkpoint (told apart by is_potential_file).

    Returns:
        (callable, "potential" or "checkpoint", the training config's "data" section or {}).
    """
    from mlff.checkpoint import load_checkpoint, model_from_checkpoint
    from mlff.export.load import is_potential_file, load_potential

    path = Path(path)
    # A missing file goes to load_potential, whose error names the file.
    if not path.is_file() or is_potential_file(path):
        potential = load_potential(path, device=device)
        training = potential.metadata.get("training") or {}
        return potential, "potential", (training.get("config") or {}).get("data") or {}
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as error:
        raise ValueError(f"{path} is neither a potential file nor a training checkpoint: {error}") from None
    model = model_from_checkpoint(checkpoint, weights).to(device).eval()
    return model, "checkpoint", checkpoint["config"].get("data") or {}
