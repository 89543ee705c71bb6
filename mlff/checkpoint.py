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


def resolve_init(init_from: str | os.PathLike) -> Path:
    """The file `init_from` names: an existing path, else a shipped potential's name ("ethanol").

    Raises:
        FileNotFoundError: neither an existing file nor a shipped potential's name.
    """
    from mlff.resources import potential_path

    path = Path(init_from)
    if path.is_file():
        return path
    try:
        return potential_path(init_from)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"init_from: no checkpoint or potential file at {init_from} (nor a shipped potential of that name)"
        ) from None


def load_init(init_from: str | os.PathLike) -> dict[str, Any]:
    """What a fine-tuning run starts from (`init_from`), as a checkpoint dict.

    `init_from` is a training checkpoint, a potential file (`mlff export`'s output, e.g. one
    from git history) or a shipped potential's name ("ethanol"): a user whose MD collapses
    often holds only the exported file. A potential file becomes a checkpoint through
    `checkpoint_from_potential`.

    Raises:
        FileNotFoundError: neither an existing file nor a shipped potential's name.
        ValueError: a file that is neither a checkpoint nor a single model's potential file.
    """
    from mlff.export.load import is_potential_file

    path = resolve_init(init_from)
    return checkpoint_from_potential(path) if is_potential_file(path) else load_checkpoint(path)


def checkpoint_from_potential(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint dict with the architecture and weights of a single model's potential file.

    The weights are the file's (backbone, encoding, energy scale, reference energies) in the
    file's dtype. The core repulsion is switched off and other export-time priors (ZBL) are
    left out, as in every training checkpoint: `mlff export` adds them again. It carries no
    optimizer state and no history; `data_summary.from_potential` names the file.

    Raises:
        ValueError: a committee file, an AOTInductor package, or a file without its architecture
            (metadata["model"]["config"]).
    """
    from mlff.export.load import read_metadata, torchscript_without_deprecation_warning

    path = Path(path)
    metadata = read_metadata(path)
    model_metadata = metadata.get("model") or {}
    if metadata.get("committee") or metadata.get("container") == "aoti" or not model_metadata.get("config"):
        raise ValueError(
            f"{path}: only a single model's TorchScript potential file with its architecture can be fine-tuned "
            "(a committee file: give one member's training checkpoint)"
        )
    with torchscript_without_deprecation_warning():
        module = torch.jit.load(str(path), map_location="cpu")
    kept_priors = ("priors.element_reference.", "priors.core_repulsion.")
    state = {
        key: value
        for key, value in upgrade_state_dict(module.state_dict()).items()
        if not key.startswith("priors.") or key.startswith(kept_priors)
    }
    species = [int(z) for z in metadata["species"]]
    dtype = state["energy_scale"].dtype
    # Off, as the trainer builds it; files written before the core repulsion lack the buffers.
    state["priors.core_repulsion.onsets"] = torch.zeros(len(species), len(species), dtype=dtype)
    state["priors.core_repulsion.strength"] = torch.zeros((), dtype=dtype)
    energies = module.element_energies()
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "mlff_version": metadata.get("mlff_version"),
        "config": {"model": dict(model_metadata["config"])},
        "command": None,
        "species": species,
        "element_energies_ev": [float(energies[z]) for z in species],
        "energy_scale_ev": float(state["energy_scale"]),
        "model_state": state,
        "ema_state": None,
        "epoch": 0,
        "history": [],
        "data_summary": {"from_potential": str(path)},
        "test_metrics": metadata.get("test_metrics"),
        "reference": None,
    }


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
