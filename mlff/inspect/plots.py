"""PNG plots of sampled encodings and of the similarity matrix.

matplotlib is imported inside each function and every figure is drawn on its
own Agg canvas (no pyplot, no global backend switch, no display needed), so
importing this module costs nothing and leaves a caller's matplotlib alone.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlff.inspect.embeddings import SampledLayer
from mlff.inspect.metrics import normalized_derivative, pca_2d

MAX_DIMENSIONS = 10
# Points standing in for bins in the PCA plot of encodings without bins.
PCA_SAMPLES_WITHOUT_BINS = 64
_PANEL_SIZE_IN = (5.0, 3.6)


def _figure(panels: int) -> tuple[Any, list[Any]]:
    """A figure on an Agg canvas with `panels` side-by-side axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_PANEL_SIZE_IN[0] * panels, _PANEL_SIZE_IN[1]), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def plot_dimensions(layers: Sequence[SampledLayer], title: str, path: Path) -> Path:
    """The first MAX_DIMENSIONS dimensions of each layer's h(x) against normalised distance, one panel per layer."""
    figure, axes = _figure(len(layers))
    for axis, layer in zip(axes, layers):
        shown = min(MAX_DIMENSIONS, layer.values.shape[1])
        for dimension in range(shown):
            axis.plot(layer.normalized_distances, layer.values[:, dimension], lw=1.0, label=f"{dimension}")
        low, high = layer.distances[0], layer.distances[-1]
        axis.set_xlabel(f"normalised distance (0 = {low:.2f} A, 1 = {high:.2f} A)")
        axis.set_ylabel("h(x)")
        axis.set_title(f"{layer.name} ({layer.kind}), dims 0-{shown - 1}", fontsize=9)
        axis.legend(fontsize=6, ncol=2, title="dim", title_fontsize=6)
    figure.suptitle(title)
    return _save(figure, path)


def plot_bin_pca(layers: Sequence[SampledLayer], title: str, path: Path) -> Path:
    """2-D PCA of each layer's spline bin values h_i, coloured by bin index.

    Encodings without bins are shown at PCA_SAMPLES_WITHOUT_BINS evenly spaced
    sample distances instead, coloured by sample index.
    """
    figure, axes = _figure(len(layers))
    for axis, layer in zip(axes, layers):
        if layer.bin_values is not None:
            points, what = layer.bin_values, "bin"
        else:
            picks = np.linspace(0, layer.values.shape[0] - 1, PCA_SAMPLES_WITHOUT_BINS).round().astype(int)
            points, what = layer.values[picks], "sample"
        coordinates, ratio = pca_2d(points)
        axis.plot(coordinates[:, 0], coordinates[:, 1], color="0.7", lw=0.8, zorder=1)
        scatter = axis.scatter(coordinates[:, 0], coordinates[:, 1], c=np.arange(len(points)), cmap="viridis", zorder=2)
        figure.colorbar(scatter, ax=axis, label=f"{what} index")
        axis.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f}% of variance)")
        axis.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f}% of variance)")
        axis.set_title(f"{layer.name} ({layer.kind}), {len(points)} {what}s", fontsize=9)
    figure.suptitle(title)
    return _save(figure, path)


def plot_derivative(layers: Sequence[SampledLayer], title: str, path: Path) -> Path:
    """|g_j(x)| / std_x(g_j(x)), g = dh/dx, against distance: the first dimensions thin, the mean over all bold."""
    figure, axes = _figure(len(layers))
    for axis, layer in zip(axes, layers):
        normalised = normalized_derivative(layer.derivatives)
        shown = min(MAX_DIMENSIONS, normalised.shape[1])
        for dimension in range(shown):
            axis.plot(layer.distances, normalised[:, dimension], lw=0.6, alpha=0.6)
        if np.isfinite(normalised).any():
            axis.plot(layer.distances, np.nanmean(normalised, axis=1), color="black", lw=1.8, label="mean over dims")
            axis.legend(fontsize=7)
        axis.set_xlabel("distance (A)")
        axis.set_ylabel("|g(x)| / std(g)")
        axis.set_title(f"{layer.name} ({layer.kind}), dims 0-{shown - 1}", fontsize=9)
    figure.suptitle(title)
    return _save(figure, path)


def plot_similarity(labels: Sequence[str], normalised: np.ndarray, raw: np.ndarray, path: Path) -> Path:
    """Heat-map of the normalised similarity matrix [m, m], each cell annotated "normalised (raw)"."""
    count = len(labels)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side = 2.0 + 1.1 * count
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    image = axis.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, label="S(a, b) / sqrt(S(a, a) S(b, b))")
    axis.set_xticks(range(count), labels, rotation=45, ha="right")
    axis.set_yticks(range(count), labels)
    for a in range(count):
        for b in range(count):
            colour = "black" if normalised[a, b] > 0.6 else "white"
            axis.text(
                b, a, f"{normalised[a, b]:.2f}\n({raw[a, b]:.3f})", ha="center", va="center", fontsize=8, color=colour
            )
    axis.set_title("encoding similarity: normalised (raw)")
    return _save(figure, path)


__all__ = ["MAX_DIMENSIONS", "plot_bin_pca", "plot_derivative", "plot_dimensions", "plot_similarity"]
