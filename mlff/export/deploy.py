"""Write a potential file: a TorchScript EnergyModel plus JSON metadata.

The file runs with `torch.jit.load` alone (format v1, see mlff.export.load).
"""

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff._version import __version__
from mlff.checkpoint import load_checkpoint, model_from_checkpoint
from mlff.encodings import ENCODINGS
from mlff.export.load import (
    METADATA_FILE,
    POTENTIAL_FORMAT,
    POTENTIAL_FORMAT_VERSION,
    UNITS,
    dtype_from_name,
    dtype_name,
    torchscript_without_deprecation_warning,
)
from mlff.models import BACKBONES, EnergyModel, ModelConfig

RESERVED_KEYS = ("format", "format_version", "mlff_version", "species", "cutoff", "dtype", "units", "model")
_FILE_MODE = 0o644


def export_model(
    model: EnergyModel,
    path: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    dtype: str | torch.dtype = "float64",
    config: ModelConfig | None = None,
) -> Path:
    """Write `model` as a standalone potential file (TorchScript + metadata).

    The model is copied (the caller's model is left as it was), put in eval
    mode on the CPU, converted to `dtype` and scripted. The file is written to
    a temporary name and renamed, so readers never see half a file.

    Args:
        model: the energy model to export.
        path: output .pt file.
        metadata: extra JSON-able entries (training data summary, test metrics,
            reference structures, ...); must not use the keys export_model writes
            itself (RESERVED_KEYS). numpy arrays and Paths are converted.
        dtype: network dtype of the file, "float64" (default) or "float32".
        config: the model's architecture, recorded under metadata["model"]["config"].

    Returns:
        The path written.
    """
    extra = dict(metadata or {})
    clashes = sorted(set(extra) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f"metadata keys {clashes} are written by export_model itself; rename them")
    target_dtype = dtype_from_name(dtype)
    deployable = copy.deepcopy(model).to(device="cpu", dtype=target_dtype).eval()
    with torchscript_without_deprecation_warning():
        scripted = torch.jit.script(deployable)
    full_metadata = {**_core_metadata(deployable, target_dtype, config), **extra}
    text = json.dumps(full_metadata, default=_to_json, indent=1)
    path = Path(path)
    _atomic_jit_save(scripted, path, {METADATA_FILE: text})
    return path


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    output: str | os.PathLike,
    weights: str = "ema",
    dtype: str | torch.dtype = "float64",
    core_repulsion_ev_per_a3: float = 0.0,
) -> Path:
    """Export a training checkpoint as a potential file.

    Args:
        checkpoint_path: a checkpoint written by training (mlff.checkpoint layout).
        output: the potential file to write.
        weights: "ema" (the averaged weights; raw ones if the checkpoint has none) or "raw".
        dtype: network dtype of the file, "float64" or "float32".
        core_repulsion_ev_per_a3: k > 0 switches on the model's core repulsion (`EnergyModel`) with
            onsets at the shortest distance of each species pair in the run's training and
            validation frames (read again from the data file the checkpoint names): zero on
            every frame the model learnt from, so the weights need no retraining.

    Returns:
        The path written.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint, weights)
    config = checkpoint["config"]
    metadata = {
        "training": {
            "epoch": checkpoint.get("epoch"),
            "weights": "ema" if weights == "ema" and checkpoint.get("ema_state") else "raw",
            "best_val_force_mae": checkpoint.get("best_val_force_mae"),
            "command": checkpoint.get("command"),
            "config": {key: value for key, value in config.items() if key != "model"},
        },
        "training_data": checkpoint.get("data_summary"),
        "test_metrics": checkpoint.get("test_metrics"),
        "reference": checkpoint.get("reference"),
    }
    if core_repulsion_ev_per_a3 > 0:
        metadata["core_repulsion"] = add_core_repulsion(model, config.get("data") or {}, core_repulsion_ev_per_a3)
    return export_model(model, output, metadata, dtype, ModelConfig(**config["model"]))


def add_core_repulsion(model: EnergyModel, data_config: dict[str, Any], strength_ev_per_a3: float) -> dict[str, Any]:
    """Switch on `model`'s core repulsion, onsets from the training run's train + val frames; its metadata."""
    from mlff.data import read_frames
    from mlff.data.reference import shortest_pair_distances
    from mlff.evaluate import select_frames, split_settings

    if not data_config.get("path"):
        raise ValueError("the checkpoint names no training data file: the core repulsion's onsets cannot be fitted")
    frames = read_frames(data_config["path"])
    settings = split_settings(data_config)
    seen = np.concatenate([select_frames(frames, "train", settings), select_frames(frames, "val", settings)])
    onsets = shortest_pair_distances(frames, seen, model.species)
    model.set_core_repulsion(torch.as_tensor(onsets, dtype=model.energy_scale.dtype), strength_ev_per_a3)
    return {
        "strength_ev_per_a3": strength_ev_per_a3,
        "species": model.species,
        "onsets_a": onsets.round(6).tolist(),
        "fitted_on": f"{seen.size} train + val frames of {data_config['path']}",
    }


def replace_reference(potential_path: str | os.PathLike, reference: dict[str, Any], output: str | os.PathLike) -> Path:
    """Write `output`: the potential file with its reference statistics (start frames, bonds, mean bond
    lengths, h(r); `mlff.data.reference.reference_statistics`) replaced; weights are copied untouched."""
    from mlff.export.load import read_metadata

    metadata = read_metadata(potential_path)
    metadata["reference"] = reference
    with torchscript_without_deprecation_warning():
        module = torch.jit.load(str(potential_path), map_location="cpu")
    text = json.dumps(metadata, default=_to_json, indent=1)
    path = Path(output)
    _atomic_jit_save(module, path, {METADATA_FILE: text})
    return path


def _core_metadata(model: EnergyModel, dtype: torch.dtype, config: ModelConfig | None) -> dict[str, Any]:
    """The entries every potential file carries."""
    return {
        "format": POTENTIAL_FORMAT,
        "format_version": POTENTIAL_FORMAT_VERSION,
        "mlff_version": __version__,
        "species": list(model.species),
        "cutoff": float(model.cutoff),
        "dtype": dtype_name(dtype),
        "units": dict(UNITS),
        "model": {
            "backbone": _registry_name(BACKBONES, type(model.backbone)),
            "encoding": _registry_name(ENCODINGS, type(model.backbone.encoding)),
            "parameters": sum(parameter.numel() for parameter in model.parameters()),
            "config": dataclasses.asdict(config) if config is not None else None,
        },
    }


def _registry_name(registry: dict[str, type], cls: type) -> str:
    """The registry key of a class, or its class name if it is not registered."""
    return next((name for name, registered in registry.items() if registered is cls), cls.__name__)


def _to_json(value: Any) -> Any:
    """JSON form of the non-JSON types metadata may hold (json.dumps `default` hook)."""
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set):
        return sorted(value)
    raise ValueError(f"metadata holds a {type(value).__name__}, which cannot be written as JSON")


def _atomic_jit_save(module: torch.jit.ScriptModule, path: Path, extra_files: dict[str, str]) -> None:
    """torch.jit.save to a temporary file next to `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            with torchscript_without_deprecation_warning():
                torch.jit.save(module, stream, _extra_files=extra_files)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
