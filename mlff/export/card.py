"""Model cards: a YAML file beside each potential, written from its metadata."""

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

from mlff.export.load import read_metadata


def model_card(potential_path: str | os.PathLike) -> dict[str, Any]:
    """The card of a potential file: what it is, what it was trained on, how, and how well."""
    path = Path(potential_path)
    metadata = read_metadata(path)
    training = metadata.get("training") or {}
    training_config = training.get("config") or {}
    return {
        "potential": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "size_bytes": path.stat().st_size,
        "mlff_version": metadata.get("mlff_version"),
        "format_version": metadata.get("format_version"),
        "species": metadata.get("species"),
        "cutoff_angstrom": metadata.get("cutoff"),
        "dtype": metadata.get("dtype"),
        "units": metadata.get("units"),
        "architecture": metadata.get("model"),
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
            "config": training_config.get("train"),
        },
        "test_metrics": metadata.get("test_metrics"),
    }


def write_model_card(potential_path: str | os.PathLike, card_path: str | os.PathLike | None = None) -> Path:
    """Write the card as YAML (default: the potential's path with .yaml); returns its path."""
    card_path = Path(card_path) if card_path is not None else Path(potential_path).with_suffix(".yaml")
    card_path.write_text(yaml.safe_dump(model_card(potential_path), sort_keys=False))
    return card_path
