"""Write a potential file: a TorchScript EnergyModel plus JSON metadata.

The file runs with `torch.jit.load` alone (format v2, see mlff.export.load and docs/file-format.md):
periodic structures, and the stress where the module has `energy_forces_stress`.
"""

import copy
import dataclasses
import os
from pathlib import Path
from typing import IO, Any

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
from mlff.models import BACKBONES, EnergyModel, ModelConfig, build_model
from mlff.models.priors import PRIORS, PairOnsets, ZBLRepulsion, build_prior, pair_onsets
from mlff.utils import atomic_write, to_json

RESERVED_KEYS = (
    "format",
    "format_version",
    "mlff_version",
    "species",
    "cutoff",
    "dtype",
    "units",
    "periodic",
    "stress",
    "model",
    "container",
    "aoti",
)
# The exported method a v2 file gives the stress with (the `stress` capability flag).
STRESS_METHOD = "energy_forces_stress"
# Potential files are meant to be shared: readable by all whatever the umask.
_FILE_MODE = 0o644


def export_model(
    model: EnergyModel,
    path: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    dtype: str | torch.dtype = "float64",
    config: ModelConfig | None = None,
    format: str = "torchscript",
    device: str = "cpu",
) -> Path:
    """Write `model` as a standalone potential file (TorchScript + metadata, or an AOTInductor package).

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
        format: "torchscript" (the portable file) or "aoti" (`mlff.export.aoti`: compiled for
            `device` and this torch, isolated molecules only).
        device: the device an "aoti" package is compiled for ("cpu" or "cuda").

    Returns:
        The path written.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    extra = dict(metadata or {})
    clashes = sorted(set(extra) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f"metadata keys {clashes} are written by export_model itself; rename them")
    target_dtype = dtype_from_name(dtype)
    deployable = copy.deepcopy(model).to(device="cpu", dtype=target_dtype).eval()
    if format == "aoti":
        from mlff.export.aoti import export_aoti

        core = _core_metadata(deployable, target_dtype, config)
        return export_aoti(deployable, path, {**core, **extra}, target_dtype, device)
    with torchscript_without_deprecation_warning():
        scripted = torch.jit.script(deployable)
    return _write_potential_file(scripted, {**_core_metadata(deployable, target_dtype, config), **extra}, path)


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    output: str | os.PathLike,
    weights: str = "ema",
    dtype: str | torch.dtype = "float64",
    core_repulsion_ev_per_a3: float = 0.0,
    repulsion: str | None = None,
    format: str = "torchscript",
    device: str = "cpu",
) -> Path:
    """Export a training checkpoint as a potential file (`format` and `device` as `export_model`).

    Args:
        checkpoint_path: a checkpoint written by training (mlff.checkpoint layout).
        output: the potential file to write.
        weights: "ema" (the averaged weights; raw ones if the checkpoint has none) or "raw".
        dtype: network dtype of the file, "float64" or "float32".
        core_repulsion_ev_per_a3: k > 0 switches on the cubic core repulsion k (r0 - r)^3 eV.
        repulsion: "cubic" (needs k > 0; the default when k > 0), "zbl" (the ZBL screened nuclear
            repulsion, no strength to give) or None (none, when k = 0). Either has onsets r0 per
            species pair from the run's training and validation frames (read again from the data
            file the checkpoint names; `add_core_repulsion`): zero on every frame the model
            learnt from, so the weights need no retraining.

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
            # Process CPU time of the run up to the exported epoch, summed over its resumes (s).
            "cpu_seconds": checkpoint.get("cpu_seconds"),
            "command": checkpoint.get("command"),
            "config": {key: value for key, value in config.items() if key != "model"},
        },
        "training_data": checkpoint.get("data_summary"),
        "test_metrics": checkpoint.get("test_metrics"),
        "reference": checkpoint.get("reference"),
    }
    kind = repulsion_kind(repulsion, core_repulsion_ev_per_a3)
    if kind is not None:
        metadata["core_repulsion"] = add_core_repulsion(
            model, config.get("data") or {}, core_repulsion_ev_per_a3, kind=kind
        )
    return export_model(model, output, metadata, dtype, ModelConfig(**config["model"]), format, device)


REPULSIONS = ("cubic", "zbl")
FORMATS = ("torchscript", "aoti")


def repulsion_kind(repulsion: str | None, strength_ev_per_a3: float) -> str | None:
    """The core repulsion asked for: "cubic", "zbl" or None, from `repulsion` and the cubic's strength.

    A strength alone means the cubic one (how `--core-repulsion K` always worked); the cubic one
    needs a strength, the ZBL one takes none.
    """
    if strength_ev_per_a3 < 0:
        raise ValueError(f"the core repulsion strength must be >= 0 eV/A^3, got {strength_ev_per_a3}")
    if repulsion is None:
        return "cubic" if strength_ev_per_a3 > 0 else None
    if repulsion not in REPULSIONS:
        raise ValueError(f"repulsion must be one of {REPULSIONS}, got {repulsion!r}")
    if repulsion == "cubic" and strength_ev_per_a3 == 0:
        raise ValueError("the cubic repulsion needs its strength k > 0 eV/A^3 (--core-repulsion K)")
    if repulsion == "zbl" and strength_ev_per_a3 > 0:
        raise ValueError("the ZBL repulsion has no strength to set: drop --core-repulsion (it is the cubic's k)")
    return repulsion


def add_core_repulsion(
    model: EnergyModel,
    data_config: dict[str, Any],
    strength_ev_per_a3: float = 0.0,
    kind: str = "cubic",
    fitted: "tuple[PairOnsets, str] | None" = None,
) -> dict[str, Any]:
    """Switch on a core repulsion of `model`, onsets from the training run's train + val frames; its metadata.

    The onsets (`mlff.models.priors.onsets.pair_onsets`) are defined for every pair of the model's
    species: the shortest distance seen within the cutoff, else a covalent-radii floor, clamped
    inside the cutoff; the metadata says which pairs were seen.

    Args:
        model: the model to change in place.
        data_config: the run's data section (`path` and the split settings).
        strength_ev_per_a3: the cubic repulsion's k > 0 (unused by "zbl").
        kind: "cubic" (the model's `core_repulsion` prior) or "zbl" (a `zbl_repulsion` prior added).
        fitted: `fit_repulsion_onsets`'s result when already computed (a committee's members share it).
    """
    if kind not in REPULSIONS:
        raise ValueError(f"repulsion must be one of {REPULSIONS}, got {kind!r}")
    onsets, fitted_on = fitted or fit_repulsion_onsets(data_config, model.species, model.cutoff)
    dtype = model.energy_scale.dtype
    onsets_tensor = torch.as_tensor(onsets.onsets_a, dtype=dtype)
    if kind == "cubic":
        model.set_core_repulsion(onsets_tensor, strength_ev_per_a3)
        settings_metadata: dict[str, Any] = {"strength_ev_per_a3": strength_ev_per_a3}
    else:
        # Built off, moved to the model's dtype, then set: onsets set before the move would be rounded
        # to the default float32 first.
        zbl = build_prior("zbl_repulsion", model.species, model.cutoff).to(dtype)
        assert isinstance(zbl, ZBLRepulsion)
        zbl.set(onsets_tensor)
        model.priors["zbl_repulsion"] = zbl
        settings_metadata = {"inner_fraction": float(zbl.inner_fraction)}
    return {
        "kind": kind,
        **settings_metadata,
        **onsets.describe(),
        "fitted_on": fitted_on,
    }


def fit_repulsion_onsets(data_config: dict[str, Any], species: list[int], cutoff: float) -> "tuple[PairOnsets, str]":
    """The onsets of every species pair from a training run's train + val frames, and what they were fitted on."""
    from mlff.data import read_frames
    from mlff.data.reference import shortest_pair_distances
    from mlff.data.splits import select_frames, split_settings

    if not data_config.get("path"):
        raise ValueError("the checkpoint names no training data file: the core repulsion's onsets cannot be fitted")
    frames = read_frames(data_config["path"])
    settings = split_settings(data_config)
    seen = np.concatenate([select_frames(frames, "train", settings), select_frames(frames, "val", settings)])
    onsets = pair_onsets(shortest_pair_distances(frames, seen, species), species, cutoff)
    return onsets, f"{seen.size} train + val frames of {data_config['path']}"


def replace_reference(potential_path: str | os.PathLike, reference: dict[str, Any], output: str | os.PathLike) -> Path:
    """Write `output`: the potential file with its reference statistics (start frames, bonds, mean bond
    lengths, h(r); `mlff.data.reference.reference_statistics`) replaced; weights are copied untouched."""
    from mlff.export.load import read_metadata

    metadata = read_metadata(potential_path)
    metadata["reference"] = reference
    with torchscript_without_deprecation_warning():
        module = torch.jit.load(str(potential_path), map_location="cpu")
    return _write_potential_file(module, metadata, output)


def eager_model_from_file(path: str | os.PathLike) -> torch.nn.Module:
    """The model of a TorchScript potential file, rebuilt from its metadata and weights (eval mode):
    an EnergyModel, or for a committee file a `CommitteeModel` of them.

    What `torch.compile` and `torch.export` need: a TorchScript module cannot be traced. The
    architecture comes from metadata["model"] (config and prior names; a committee's members share
    them), the weights from the file.

    Raises:
        ValueError: a file without its architecture, or an AOTInductor package.
    """
    from mlff.export.committee import CommitteeModel
    from mlff.export.load import read_metadata, resolve_potential

    path = resolve_potential(path)
    metadata = read_metadata(path)
    model_metadata = metadata.get("model") or {}
    if metadata.get("container") == "aoti" or not model_metadata.get("config"):
        raise ValueError(f"{path}: only a TorchScript file with its architecture can be rebuilt")
    with torchscript_without_deprecation_warning():
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    config = ModelConfig(**model_metadata["config"])
    species = [int(z) for z in metadata["species"]]

    def member() -> EnergyModel:
        model = build_model(config, species, [0.0] * len(species), 1.0)
        for name, kind in (model_metadata.get("priors") or {}).items():
            if name not in model.priors:
                model.priors[name] = build_prior(kind, species, model.cutoff)
        return model

    committee = metadata.get("committee")
    model = CommitteeModel([member() for _ in range(committee["members"])]) if committee else member()
    model = model.to(dtype_from_name(metadata["dtype"]))
    model.load_state_dict(state)
    return model.eval()


def convert_potential(path: str | os.PathLike, output: str | os.PathLike, format: str, device: str = "cpu") -> Path:
    """Write the potential file `path` again in `format` (a TorchScript file as an AOTInductor package)."""
    from mlff.export.load import read_metadata

    metadata = read_metadata(path)
    if metadata.get("committee"):
        raise ValueError(f"{path} is a committee: a converted file holds one model")
    model = eager_model_from_file(path)
    extra = {key: value for key, value in metadata.items() if key not in RESERVED_KEYS}
    config = ModelConfig(**metadata["model"]["config"])
    return export_model(model, output, extra, metadata["dtype"], config, format, device)


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
        # Capability flags of format v2; `stress` is settled by the scripted module (_write_potential_file).
        "periodic": True,
        "stress": True,
        "model": {
            "backbone": _registry_name(BACKBONES, type(model.backbone)),
            "encoding": _registry_name(ENCODINGS, type(model.backbone.encoding)),
            "priors": {name: _registry_name(PRIORS, type(prior)) for name, prior in model.priors.items()},
            "parameters": sum(parameter.numel() for parameter in model.parameters()),
            "config": dataclasses.asdict(config) if config is not None else None,
        },
    }


def _registry_name(registry: dict[str, type], cls: type) -> str:
    """The registry key of a class, or its class name if it is not registered."""
    return next((name for name, registered in registry.items() if registered is cls), cls.__name__)


def _write_potential_file(module: torch.jit.ScriptModule, metadata: dict[str, Any], path: str | os.PathLike) -> Path:
    """The module with its metadata as the JSON extra file, saved through atomic_write (never half a file).

    numpy, torch, Path and set values in the metadata are converted (mlff.utils.JSONEncoder);
    any other non-JSON value is a ValueError, raised before anything is written. A v2 file's
    `stress` flag says whether the module has `energy_forces_stress` (a committee has none).
    """
    if metadata.get("format_version") == POTENTIAL_FORMAT_VERSION:
        metadata = {**metadata, "stress": module._c._has_method(STRESS_METHOD)}
    try:
        extra_files = {METADATA_FILE: to_json(metadata, indent=1)}
    except TypeError as error:
        raise ValueError(f"metadata cannot be written as JSON: {error}") from None

    def save(stream: IO[bytes]) -> None:
        with torchscript_without_deprecation_warning():
            torch.jit.save(module, stream, _extra_files=extra_files)

    return atomic_write(path, save, mode=_FILE_MODE)
