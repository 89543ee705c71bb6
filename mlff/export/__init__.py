"""Potential files: export (TorchScript + metadata) and loading.

Loading (`load_potential`, `read_metadata`, `Potential`) needs only torch and
the file. The exporters need the model classes, so they are imported on first
use: importing this package for loading pulls in no model or training code.
"""

import importlib
from typing import TYPE_CHECKING, Any

from mlff.export.load import (
    METADATA_FILE,
    POTENTIAL_FORMAT,
    POTENTIAL_FORMAT_VERSION,
    Potential,
    PotentialError,
    PotentialNotFoundError,
    describe_metadata,
    load_potential,
    read_metadata,
    resolve_potential,
)

if TYPE_CHECKING:
    from mlff.export.deploy import export_checkpoint, export_model

_DEPLOY_NAMES = ("export_checkpoint", "export_model")


def __getattr__(name: str) -> Any:
    if name in _DEPLOY_NAMES:
        return getattr(importlib.import_module("mlff.export.deploy"), name)
    raise AttributeError(f"module 'mlff.export' has no attribute {name!r}")


__all__ = [
    "METADATA_FILE",
    "POTENTIAL_FORMAT",
    "POTENTIAL_FORMAT_VERSION",
    "Potential",
    "PotentialError",
    "PotentialNotFoundError",
    "describe_metadata",
    "export_checkpoint",
    "export_model",
    "load_potential",
    "read_metadata",
    "resolve_potential",
]
