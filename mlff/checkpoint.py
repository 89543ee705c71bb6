"""Training checkpoints: written atomically, read back with a clear error.

A checkpoint is a dict saved with torch.save:
    format            "mlff-checkpoint"
    format_version    CHECKPOINT_VERSION
    mlff_version      str
    config            the full training config as a plain dict ("model" -> ModelConfig fields)
    command           the command line that started the run, or None
    species           [int] atomic numbers
    element_energies_ev [float], energy_scale_ev float (fitted on the run's training frames, not trained;
                      a resumed run rebuilds its model from these)
    model_state, ema_state   state dicts of the EnergyModel (raw and EMA weights)
    optimizer_state, scheduler_state, epoch (last finished, 1-based), best_val_force_mae
    history           list of per-epoch metric dicts
    data_summary      dict (dataset path(s), frame counts incl. equilibrium frames and frames with an
                      energy label, split, equilibrium_path, init_from: the pretrained checkpoint or None)
    test_metrics      dict or None (filled when training finishes)
    reference         dict or None (structures and statistics shipped with a potential)
"""

import os
from pathlib import Path
from typing import Any

import torch

from mlff.models import EnergyModel, ModelConfig, build_model
from mlff.models.energy import upgrade_state_dict

# Re-exported: the trainer and tests save checkpoints through this name.
from mlff.utils import atomic_torch_save as atomic_torch_save

CHECKPOINT_FORMAT = "mlff-checkpoint"
CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint, checking that it is one mlff can use."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an mlff checkpoint")
    version = checkpoint.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version}; this mlff reads version {CHECKPOINT_VERSION}"
        )
    # Weights saved before the priors existed come back under today's key names, for every reader
    # (resume, init_from, export, evaluation) alike.
    for name in ("model_state", "ema_state"):
        if checkpoint.get(name):
            checkpoint[name] = upgrade_state_dict(checkpoint[name])
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], weights: str = "ema") -> EnergyModel:
    """Rebuild the EnergyModel of a checkpoint with its raw or EMA weights."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    model = build_model(
        ModelConfig(**checkpoint["config"]["model"]),
        checkpoint["species"],
        checkpoint["element_energies_ev"],
        checkpoint["energy_scale_ev"],
    )
    state = checkpoint["ema_state"] if weights == "ema" and checkpoint.get("ema_state") else checkpoint["model_state"]
    model.load_state_dict(state)
    return model
