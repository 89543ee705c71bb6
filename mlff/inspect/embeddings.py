"""Pull the distance encodings out of a checkpoint or a potential file and sample them.

Every backbone today holds one `DistanceEncoding` (`backbone.encoding`), shared
by all its interaction layers; the search below walks all submodules, so a
model that carries one encoding per layer yields one `EncodingLayer` each, in
module order. A potential file is a TorchScript module: its encodings are found
by their class name (`original_name`) and keep their compiled `encode`, their
parameters and attributes (r_min, r_max, ...), so no model class is rebuilt.

What is sampled is the learned encoding itself, `encode(x)`, without the cosine
cutoff envelope every encoding shares (the envelope is fixed, not learned, and
would dominate the metrics near the cutoff). Distances:

- spline: 1000 points evenly over [r_min, r_max], the span of the bin centres;
- other encodings: [NON_SPLINE_R_MIN_A, cutoff], since no bonded pair comes
  closer than 0.5 A (H2: 0.74 A) and the Bessel basis sin(k pi r / r_c) / r is
  singular at r = 0.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from mlff.encodings import ENCODINGS, DistanceEncoding
from mlff.export.load import is_potential_file, load_potential, resolve_potential

DEFAULT_POINTS = 1000
NON_SPLINE_R_MIN_A = 0.5
_CLASS_TO_KIND = {cls.__name__: name for name, cls in ENCODINGS.items()}
_TRAINING_CHECKPOINT_NAMES = ("best", "last")


@dataclass(frozen=True)
class EncodingLayer:
    """One distance encoding of a model.

    Attributes:
        name: its module path in the model, e.g. "backbone.encoding".
        kind: its registry name ("spline", "gaussian", "bessel", "mlp") or class name.
        module: the eager `DistanceEncoding` or its TorchScript counterpart (both have `encode`).
        size: s, the number of features.
        cutoff: its envelope cutoff, Angstrom.
        distance_range: (low, high) Angstrom sampled by default (see the module docstring).
    """

    name: str
    kind: str
    module: nn.Module
    size: int
    cutoff: float
    distance_range: tuple[float, float]

    def bin_values(self) -> Optional[np.ndarray]:
        """The spline's learned bin values h_i [n_bins, s] (float64), None for other encodings."""
        if self.kind != "spline":
            return None
        return self.module.values.detach().to("cpu", torch.float64).numpy()

    def bin_centres(self) -> Optional[np.ndarray]:
        """The spline's bin centres x_i [n_bins] in Angstrom, None for other encodings."""
        if self.kind != "spline":
            return None
        return np.linspace(float(self.module.r_min), float(self.module.r_max), int(self.module.n_bins))


@dataclass(frozen=True)
class InspectedModel:
    """A model file and the encodings found in it.

    Attributes:
        label: short unique name used in tables and file names.
        path: the file.
        source: "checkpoint" or "potential".
        backbone: the backbone's registry name ("?" if the file does not say).
        weights: "ema" or "raw" for a checkpoint, None for a potential file.
        layers: the encodings, in module order (at least one).
    """

    label: str
    path: Path
    source: str
    backbone: str
    weights: Optional[str]
    layers: list[EncodingLayer]


@dataclass(frozen=True)
class SampledLayer:
    """An encoding sampled at evenly spaced distances.

    Attributes:
        name: the layer's module path. kind: the encoding's registry name.
        distances: [n] Angstrom, evenly spaced from low to high.
        values: [n, s] h(x) (no envelope).
        derivatives: [n, s] dh/dx per Angstrom (autograd through `encode`).
        bin_values: [n_bins, s] the spline's h_i, None for other encodings.
    """

    name: str
    kind: str
    distances: np.ndarray
    values: np.ndarray
    derivatives: np.ndarray
    bin_values: Optional[np.ndarray]

    @property
    def normalized_distances(self) -> np.ndarray:
        """[n] (x - low) / (high - low), in [0, 1]."""
        low, high = self.distances[0], self.distances[-1]
        return (self.distances - low) / (high - low)


def default_label(path: Path) -> str:
    """The file's stem; for training checkpoints (best.pt, last.pt) prefixed by the run folder, e.g. "run-best"."""
    path = Path(path)
    if path.stem in _TRAINING_CHECKPOINT_NAMES and path.parent.name:
        return f"{path.parent.name}-{path.stem}"
    return path.stem


def load_inspected_model(path: str | os.PathLike, weights: str = "ema", label: str | None = None) -> InspectedModel:
    """Load a potential file or a training checkpoint and find its distance encodings.

    Args:
        path: a potential file (TorchScript, from `mlff export`), a shipped potential's name
            ("ethanol") or a training checkpoint.
        weights: for a checkpoint, "ema" (its averaged weights, raw ones if it has none) or "raw".
        label: the name to show; default_label(path) if None.

    Raises:
        FileNotFoundError: no such file and no shipped potential of that name.
        ValueError: the file is neither an mlff potential nor an mlff checkpoint, or holds no distance encoding.
    """
    path = resolve_potential(path)
    label = label or default_label(path)
    if is_potential_file(path):
        potential = load_potential(path)
        module, source, used_weights = potential.module, "potential", None
        backbone = str((potential.metadata.get("model") or {}).get("backbone", "?"))
    else:
        from mlff.checkpoint import load_checkpoint, model_from_checkpoint

        try:
            checkpoint = load_checkpoint(path)
        except ValueError as error:
            raise ValueError(
                f"{path} is neither an mlff potential file nor an mlff training checkpoint: {error}"
            ) from None
        module = model_from_checkpoint(checkpoint, weights).eval()
        source = "checkpoint"
        used_weights = "ema" if weights == "ema" and checkpoint.get("ema_state") else "raw"
        backbone = str(checkpoint["config"]["model"].get("backbone", "?"))
    layers = find_encodings(module)
    if not layers:
        raise ValueError(f"{path} ({source}) holds no distance encoding: nothing to inspect")
    return InspectedModel(label, path, source, backbone, used_weights, layers)


def find_encodings(model: nn.Module) -> list[EncodingLayer]:
    """Every distance encoding inside an eager or TorchScript model, in module order (shared ones once)."""
    layers = []
    for name, module in model.named_modules():
        kind = _encoding_kind(module)
        if kind is None:
            continue
        cutoff = float(module.cutoff)
        if kind == "spline":
            distance_range = (float(module.r_min), float(module.r_max))
        else:
            distance_range = (NON_SPLINE_R_MIN_A, cutoff)
        layers.append(EncodingLayer(name or "<model>", kind, module, int(module.size), cutoff, distance_range))
    return layers


def _encoding_kind(module: nn.Module) -> Optional[str]:
    """The encoding's registry name (or class name if unregistered), None if the module is no encoding."""
    if isinstance(module, DistanceEncoding):
        return _CLASS_TO_KIND.get(type(module).__name__, type(module).__name__)
    if isinstance(module, torch.jit.ScriptModule):
        return _CLASS_TO_KIND.get(module.original_name)
    return None


def sample_layer(
    layer: EncodingLayer,
    n_points: int = DEFAULT_POINTS,
    distance_range: tuple[float, float] | None = None,
) -> SampledLayer:
    """Sample an encoding and its derivative at n_points evenly spaced distances.

    Args:
        layer: the encoding.
        n_points: number of distances (>= 2).
        distance_range: (low, high) Angstrom; the layer's own range if None.
    """
    if n_points < 2:
        raise ValueError(f"need at least 2 sample points, got {n_points}")
    low, high = distance_range or layer.distance_range
    if not high > low:
        raise ValueError(f"empty distance range [{low}, {high}] Angstrom for {layer.name}")
    distances = torch.linspace(low, high, n_points, dtype=_dtype_of(layer.module)).requires_grad_(True)
    values = layer.module.encode(distances)
    columns = []
    for dimension in range(values.shape[1]):
        # Row e of h depends on distances[e] only, so the gradient of a column's sum is that column's dh_j/dx.
        (gradient,) = torch.autograd.grad(values[:, dimension].sum(), distances, retain_graph=True, allow_unused=True)
        columns.append(gradient if gradient is not None else torch.zeros_like(distances))
    derivatives = torch.stack(columns, dim=1)
    return SampledLayer(
        layer.name,
        layer.kind,
        _numpy(distances),
        _numpy(values),
        _numpy(derivatives),
        layer.bin_values(),
    )


def sample_model(
    model: InspectedModel, n_points: int = DEFAULT_POINTS, distance_range: tuple[float, float] | None = None
) -> list[SampledLayer]:
    """sample_layer of every encoding layer of a model (each on its own range unless distance_range is given)."""
    return [sample_layer(layer, n_points, distance_range) for layer in model.layers]


def common_range(models: list[InspectedModel]) -> tuple[float, float]:
    """The distances (low, high) Angstrom every layer of every model covers: where models can be compared.

    Raises:
        ValueError: the ranges do not overlap.
    """
    ranges = [layer.distance_range for model in models for layer in model.layers]
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if not high > low:
        named = ", ".join(f"{model.label} {[list(layer.distance_range) for layer in model.layers]}" for model in models)
        raise ValueError(f"the models' encoding ranges (Angstrom) do not overlap, so they cannot be compared: {named}")
    return low, high


def _dtype_of(module: nn.Module) -> torch.dtype:
    """The floating dtype of a module's parameters (float64 if it has none)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float64


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def describe(model: InspectedModel) -> dict[str, Any]:
    """JSON-able summary of a model file and its encoding layers."""
    return {
        "label": model.label,
        "path": str(model.path),
        "source": model.source,
        "backbone": model.backbone,
        "weights": model.weights,
        "layers": [
            {
                "layer": layer.name,
                "encoding": layer.kind,
                "size": layer.size,
                "cutoff_a": layer.cutoff,
                "distance_range_a": list(layer.distance_range),
            }
            for layer in model.layers
        ],
    }


__all__ = [
    "DEFAULT_POINTS",
    "NON_SPLINE_R_MIN_A",
    "EncodingLayer",
    "InspectedModel",
    "SampledLayer",
    "common_range",
    "default_label",
    "describe",
    "find_encodings",
    "load_inspected_model",
    "sample_layer",
    "sample_model",
]
