"""Inspect learned distance encodings: the embedding metrics and plots of Gao et al. 2022.

- `metrics`: pure functions on sampled embeddings [n_points, s] (non-linearity,
  non-monotonicity, diversity, smoothness, similarity between models).
- `embeddings`: find the encodings in a checkpoint or potential file and sample them.
- `plots`: PNGs (matplotlib, imported only when plotting).
- `report`: all of it for `mlff inspect`: tables, JSON, plots.
"""

from mlff.inspect.embeddings import (
    DEFAULT_POINTS,
    EncodingLayer,
    InspectedModel,
    SampledLayer,
    find_encodings,
    load_inspected_model,
    sample_layer,
    sample_model,
)
from mlff.inspect.metrics import (
    diversity,
    layer_similarity,
    model_similarity,
    nonlinearity,
    nonmonotonicity,
    normalized_derivative,
    pca_2d,
    similarity_matrix,
    smoothness,
)
from mlff.inspect.report import format_metrics, format_similarity, inspect_files, layer_metrics

__all__ = [
    "DEFAULT_POINTS",
    "EncodingLayer",
    "InspectedModel",
    "SampledLayer",
    "diversity",
    "find_encodings",
    "format_metrics",
    "format_similarity",
    "inspect_files",
    "layer_metrics",
    "layer_similarity",
    "load_inspected_model",
    "model_similarity",
    "nonlinearity",
    "nonmonotonicity",
    "normalized_derivative",
    "pca_2d",
    "sample_layer",
    "sample_model",
    "similarity_matrix",
    "smoothness",
]
