"""Model cards: a YAML file beside each potential, written from its metadata.

Besides what the file's metadata says (architecture, data, training, test errors), a card can
hold two sections measured after export, which survive re-writing the card as long as the file
is unchanged (same SHA-256):

- `check`: a fixed subset of the test frames (their indices in the data file) and the potential's
  errors on them, so that anyone can reproduce the card's accuracy in seconds;
- `stability`: the potential's row of the MD17 stability benchmark (`mlff bench stability`).
"""

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlff.export.load import dtype_name, read_metadata
from mlff.utils import sha256_of

CHECK_FRAMES = 50
MEASURED_SECTIONS = ("check", "stability")


def model_card(potential_path: str | os.PathLike) -> dict[str, Any]:
    """The card of a potential file: what it is, what it was trained on, how, and how well."""
    path = Path(potential_path)
    metadata = read_metadata(path)
    training = metadata.get("training") or {}
    training_config = training.get("config") or {}
    return {
        "potential": path.name,
        "sha256": sha256_of(path),
        "size_bytes": path.stat().st_size,
        "mlff_version": metadata.get("mlff_version"),
        "format_version": metadata.get("format_version"),
        "species": metadata.get("species"),
        "cutoff_angstrom": metadata.get("cutoff"),
        "dtype": metadata.get("dtype"),
        "units": metadata.get("units"),
        "architecture": metadata.get("model"),
        "core_repulsion": metadata.get("core_repulsion"),
        "data": {
            "file": (training_config.get("data") or {}).get("path"),
            "summary": metadata.get("training_data"),
            "split": training_config.get("data"),
        },
        "training": {
            "command": training.get("command"),
            "epochs_run": training.get("epoch"),
            "weights": training.get("weights"),
            "best_val_force_mae_mev_per_a": training.get("best_val_force_mae"),
            "cpu_hours": training["cpu_seconds"] / 3600.0 if training.get("cpu_seconds") is not None else None,
            "config": training_config.get("train"),
        },
        "test_metrics": metadata.get("test_metrics"),
    }


def check_frames(test_indices: np.ndarray, count: int = CHECK_FRAMES) -> np.ndarray:
    """`count` test frames spread evenly over the sorted test indices (all of them if fewer)."""
    ordered = np.sort(np.asarray(test_indices, dtype=np.int64))
    if ordered.size <= count:
        return ordered
    return ordered[np.linspace(0, ordered.size - 1, count).round().astype(np.int64)]


def card_check(
    potential_path: str | os.PathLike, data_path: str | os.PathLike, count: int = CHECK_FRAMES
) -> dict[str, Any]:
    """The card's `check` section: the potential's errors on `count` frames of its test split.

    The split is the one recorded in the potential's training config; the frames are spread
    evenly over it (`check_frames`). Errors in meV and meV/A, as `mlff.evaluate.evaluate` gives.
    """
    import torch

    from mlff.data import read_frames
    from mlff.data.batch import FrameTensors
    from mlff.data.splits import select_frames, split_settings
    from mlff.evaluate import evaluate, load_evaluation_model

    potential, _, data_config = load_evaluation_model(potential_path, "cpu")
    frames = read_frames(data_path)
    indices = check_frames(select_frames(frames, "test", split_settings(data_config)), count)
    metrics = evaluate(potential, FrameTensors(frames, potential.dtype), indices)
    return {
        "data": Path(data_path).name,
        "split": "test",
        "frame_indices": [int(index) for index in indices],
        "force_mae_mev_per_a": metrics["force_mae_mev_per_a"],
        "energy_mae_mev": metrics["energy_mae_mev"],
        "inputs_dtype": dtype_name(potential.dtype),
        "torch_version": str(torch.__version__),
    }


def write_model_card(
    potential_path: str | os.PathLike,
    card_path: str | os.PathLike | None = None,
    check_data: str | os.PathLike | None = None,
    stability: dict[str, Any] | None = None,
) -> Path:
    """Write the card as YAML (default: the potential's path with .yaml); returns its path.

    Args:
        potential_path: the potential file.
        card_path: where the card goes.
        check_data: the labelled dataset of the potential's training run: the `check` section is
            measured on its test split. None keeps the existing card's section (if the file is unchanged).
        stability: the `stability` section (a row of `mlff.bench.stability`). None keeps the existing one.
    """
    card_path = Path(card_path) if card_path is not None else Path(potential_path).with_suffix(".yaml")
    card = model_card(potential_path)
    if card_path.is_file():
        previous = yaml.safe_load(card_path.read_text()) or {}
        if previous.get("sha256") == card["sha256"]:
            card.update({key: previous[key] for key in MEASURED_SECTIONS if key in previous})
    if check_data is not None:
        card["check"] = card_check(potential_path, check_data)
    if stability is not None:
        card["stability"] = stability
    card_path.write_text(yaml.safe_dump(card, sort_keys=False))
    return card_path
