"""Embedding metrics of Gao et al. 2022 ("Learning Regularized Positional Encoding for Molecular Prediction").

Every function is pure and takes numpy arrays or torch tensors. An embedding
is sampled at n distances: `distances` [n] (Angstrom) and `embedding` [n, s],
row i the s features at distances[i].

Correlations follow the paper: Pearson's rho, or Spearman's (Pearson's on
ranks, ties averaged). A dimension that is constant over the samples has no
defined correlation; it counts as uncorrelated with everything (rho = 0), so
it raises non-linearity and diversity rather than turning them into NaN.
"""

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from scipy.stats import rankdata

from mlff.encodings.spline import smoothness_loss

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def as_float_array(array: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of a numpy array, torch tensor (any device, detached) or sequence."""
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def _embedding(embedding: ArrayLike, distances: ArrayLike | None = None) -> np.ndarray:
    """The embedding as float64 [n, s] (n >= 2), checked against distances [n] when given."""
    values = as_float_array(embedding)
    if values.ndim != 2:
        raise ValueError(f"an embedding must have shape [n_points, s], got {list(values.shape)}")
    if values.shape[0] < 2:
        raise ValueError(f"correlations need at least 2 sample points, got {values.shape[0]}")
    if distances is not None:
        points = as_float_array(distances)
        if points.shape != (values.shape[0],):
            raise ValueError(
                f"distances must have shape [{values.shape[0]}] to match the embedding, got {list(points.shape)}"
            )
    return values


def _standardized(columns: np.ndarray) -> np.ndarray:
    """Columns [n, m] centred and scaled to unit norm; constant columns become zeros.

    With this scaling Z_a^T Z_b is the Pearson correlation matrix of the columns.
    """
    centred = columns - columns.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=0, keepdims=True)
    scale = np.max(np.abs(columns), axis=0, keepdims=True)
    # A column constant up to rounding has a norm of a few ulps of its magnitude: treat it as constant.
    constant = norms <= 1e-12 * np.maximum(scale, 1e-300) * np.sqrt(columns.shape[0])
    return np.where(constant, 0.0, centred / np.where(constant, 1.0, norms))


def pearson_matrix(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pearson correlations between the columns of a [n, s_a] and b [n, s_b] -> [s_a, s_b] (0 for constant columns)."""
    left, right = _embedding(a), _embedding(b)
    if left.shape[0] != right.shape[0]:
        raise ValueError(
            f"both embeddings must be sampled at the same points, got {left.shape[0]} and {right.shape[0]}"
        )
    return np.clip(_standardized(left).T @ _standardized(right), -1.0, 1.0)


def _correlation_with_distance(distances: ArrayLike, embedding: ArrayLike, ranks: bool) -> np.ndarray:
    """rho(h_j, x) per dimension [s], Pearson or (ranks=True) Spearman."""
    values = _embedding(embedding, distances)
    points = as_float_array(distances)[:, None]
    if ranks:
        values = rankdata(values, axis=0)
        points = rankdata(points, axis=0)
    return pearson_matrix(values, points)[:, 0]


def nonlinearity(distances: ArrayLike, embedding: ArrayLike) -> float:
    """1 - mean_j rho^2(h_j, x), Pearson's rho: 0 when every dimension is linear in the distance.

    Args:
        distances: [n] sample distances x (Angstrom).
        embedding: [n, s] features h(x).
    """
    return float(1.0 - np.mean(_correlation_with_distance(distances, embedding, ranks=False) ** 2))


def nonmonotonicity(distances: ArrayLike, embedding: ArrayLike) -> float:
    """1 - mean_j rho_S^2(h_j, x), Spearman's rho: 0 when every dimension is monotone in the distance.

    Args:
        distances: [n] sample distances x (Angstrom).
        embedding: [n, s] features h(x).
    """
    return float(1.0 - np.mean(_correlation_with_distance(distances, embedding, ranks=True) ** 2))


def diversity(embedding: ArrayLike) -> float:
    """1 - mean over unordered pairs j < k of rho^2(h_j, h_k), Pearson's rho.

    The paper prints the inner sum from k = i + 1; it is read as k = j + 1,
    all s (s - 1) / 2 pairs of distinct dimensions. 0 when all dimensions are
    linearly related, 1 when no two are correlated.

    Args:
        embedding: [n, s] features, s >= 2.
    """
    values = _embedding(embedding)
    size = values.shape[1]
    if size < 2:
        raise ValueError(f"diversity needs at least 2 dimensions, got s = {size}")
    squared = pearson_matrix(values, values) ** 2
    upper = np.triu_indices(size, k=1)
    return float(1.0 - np.mean(squared[upper]))


def smoothness(bin_values: ArrayLike) -> float:
    """1 - L_smooth, L_smooth = sum_i ||h_{i+1} - h_i|| / sum_i ||h_i|| of spline bin values [n_bins, s].

    The same loss the spline encoding trains with (mlff.encodings.smoothness_loss).
    By the triangle inequality L_smooth lies in [0, 2], so the result lies in
    [-1, 1]: 1 for equal neighbouring bins, below 0 when neighbours differ by
    more than their size (the "rbf" initialisation with s > n_bins does).
    """
    values = as_float_array(bin_values)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"bin values must have shape [n_bins >= 2, s], got {list(values.shape)}")
    return float(1.0 - smoothness_loss(torch.from_numpy(values)))


def layer_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """mean over all pairs (j, k) of rho^2(a_j, b_k): the paper's similarity of two embeddings [n, s_a], [n, s_b].

    Both must be sampled at the same distances.
    """
    return float(np.mean(pearson_matrix(a, b) ** 2))


def model_similarity(layers_a: Sequence[ArrayLike], layers_b: Sequence[ArrayLike]) -> float:
    """Raw S(a, b): layer_similarity averaged over layers paired by index.

    Models with different numbers of encoding layers are compared over their
    first min(L_a, L_b) layers.

    Args:
        layers_a: the embeddings [n, s] of model a, one per encoding layer.
        layers_b: the same for model b, sampled at the same n distances.
    """
    common = min(len(layers_a), len(layers_b))
    if common == 0:
        raise ValueError("similarity needs at least one encoding layer in each model")
    return float(np.mean([layer_similarity(layers_a[i], layers_b[i]) for i in range(common)]))


def similarity_matrix(models: Sequence[Sequence[ArrayLike]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise similarities of m models: (raw [m, m], normalised [m, m]).

    raw[a, b] = S(a, b) (model_similarity). normalised[a, b] = S(a, b) / sqrt(S(a, a) S(b, b)),
    with S(a, a) and S(b, b) taken over the same common layers as S(a, b), so the
    diagonal is 1 and the matrix symmetric (NaN where S(a, a) is 0: all dimensions constant).

    Args:
        models: per model, its embeddings [n, s] per encoding layer, all sampled at the same n distances.
    """
    count = len(models)
    raw = np.empty((count, count))
    normalised = np.empty((count, count))
    for a in range(count):
        for b in range(a, count):
            common = min(len(models[a]), len(models[b]))
            left, right = models[a][:common], models[b][:common]
            value = model_similarity(left, right)
            scale = np.sqrt(model_similarity(left, left) * model_similarity(right, right))
            raw[a, b] = raw[b, a] = value
            normalised[a, b] = normalised[b, a] = value / scale if scale > 0 else np.nan
    return raw, normalised


def normalized_derivative(derivatives: ArrayLike) -> np.ndarray:
    """|g_j(x)| / std_x(g_j(x)) per dimension: the slope's size relative to its spread over the samples.

    Args:
        derivatives: [n, s] g = dh/dx (per Angstrom) at the sample distances.

    Returns:
        [n, s] dimensionless; NaN for a dimension whose slope does not vary (a linear one).
    """
    slopes = _embedding(derivatives)
    spread = slopes.std(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, np.abs(slopes) / np.where(spread > 0, spread, 1.0), np.nan)


def pca_2d(points: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Projection of points [m, s] on their first two principal axes.

    Returns:
        (coordinates [m, 2], explained variance ratio [2]); with s = 1 the second axis is zero.
    """
    values = as_float_array(points)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"PCA needs points of shape [m >= 2, s], got {list(values.shape)}")
    centred = values - values.mean(axis=0, keepdims=True)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    coordinates = np.zeros((values.shape[0], 2))
    kept = min(2, axes.shape[0])
    coordinates[:, :kept] = centred @ axes[:kept].T
    variance = singular**2
    ratio = np.zeros(2)
    total = variance.sum()
    if total > 0:
        ratio[:kept] = variance[:kept] / total
    return coordinates, ratio


__all__ = [
    "as_float_array",
    "diversity",
    "layer_similarity",
    "model_similarity",
    "nonlinearity",
    "nonmonotonicity",
    "normalized_derivative",
    "pca_2d",
    "pearson_matrix",
    "similarity_matrix",
    "smoothness",
]
