"""Distance-encoding options fitted from the training frames (`encoding_options.r_min: auto`).

A spline's knots only learn where pair distances fall: with ethanol's distances in
0.89-4.35 A and knots spread over 0-5 A, a third of them never see data. `auto`
for `r_min` and/or `r_max` puts the first/last knot just outside the shortest/longest
training pair distance within the cutoff. The numbers are resolved once, when a
fresh run starts, and written into the run's model config, so checkpoints,
`--resume`, `init_from` and exported potentials carry them as plain numbers.
"""

import dataclasses
import math
from typing import Any

import numpy as np

from mlff.data.frames import Frames
from mlff.models import ModelConfig
from mlff.training.config import ConfigError

AUTO = "auto"
# Options that may be "auto" and how each is fitted.
AUTO_OPTIONS = ("r_min", "r_max")
# Margin beyond the training distances, Angstrom: the end knots sit just outside the data so
# the spline's linear extrapolation starts where no training pair constrains it anyway.
MARGIN_A = 0.1
# Frames sampled (evenly) to find the distance range: the extremes of thousands of MD
# frames are reached within a few percent of them, and all frames of a big file are slow.
MAX_FRAMES = 2000


def has_auto_options(model: ModelConfig) -> bool:
    """Whether any encoding option of `model` is still "auto"."""
    return any(value == AUTO for value in model.encoding_options.values())


def pair_distance_range(frames: Frames, indices: np.ndarray, cutoff: float) -> tuple[float, float]:
    """(shortest, longest) pair distance in Angstrom, within `cutoff`, over the given frames.

    Raises:
        ConfigError: no pair of atoms lies within the cutoff in any of these frames.
    """
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size > MAX_FRAMES:
        indices = indices[np.linspace(0, indices.size - 1, MAX_FRAMES).astype(np.int64)]
    shortest, longest = math.inf, 0.0
    for index in indices:
        positions = frames.frame(int(index))[1]
        first, second = np.triu_indices(len(positions), k=1)
        distances = np.linalg.norm(positions[first] - positions[second], axis=-1)
        distances = distances[distances < cutoff]
        if distances.size:
            shortest = min(shortest, float(distances.min()))
            longest = max(longest, float(distances.max()))
    if not math.isfinite(shortest):
        raise ConfigError(f"encoding_options auto: no pair of atoms lies within the {cutoff} A cutoff")
    return shortest, longest


def fitted_options(options: dict[str, Any], shortest: float, longest: float, cutoff: float) -> dict[str, Any]:
    """`options` with each "auto" value replaced by its fitted number (Angstrom, rounded to 0.01 outward).

    Raises:
        ConfigError: an option other than r_min / r_max is "auto".
    """
    unknown = sorted(key for key, value in options.items() if value == AUTO and key not in AUTO_OPTIONS)
    if unknown:
        raise ConfigError(f"model.encoding_options {unknown} cannot be 'auto'; only {list(AUTO_OPTIONS)} can")
    resolved = dict(options)
    if resolved.get("r_min") == AUTO:
        resolved["r_min"] = max(0.0, math.floor((shortest - MARGIN_A) * 100.0) / 100.0)
    if resolved.get("r_max") == AUTO:
        resolved["r_max"] = min(cutoff, math.ceil((longest + MARGIN_A) * 100.0) / 100.0)
    return resolved


def resolve_encoding_options(model: ModelConfig, frames: Frames, train_indices: np.ndarray) -> ModelConfig:
    """`model` with its "auto" encoding options fitted on the training frames (unchanged if none)."""
    if not has_auto_options(model):
        return model
    shortest, longest = pair_distance_range(frames, train_indices, model.cutoff)
    options = fitted_options(model.encoding_options, shortest, longest, model.cutoff)
    return dataclasses.replace(model, encoding_options=options)
