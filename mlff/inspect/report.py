"""`mlff inspect` as a library call: metrics tables, plots and JSON for one or several model files.

Per model, each encoding layer is sampled on its own range (see
mlff.inspect.embeddings) and gets the four metrics. With several models, all
are sampled again on the range every layer covers (common_range) for the
similarity matrix; layers are paired by index over the models' common layer
count (models differing in encoding layers are compared over the first
min(L_a, L_b)).
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mlff.inspect import plots
from mlff.inspect.embeddings import (
    DEFAULT_POINTS,
    InspectedModel,
    SampledLayer,
    common_range,
    default_label,
    describe,
    load_inspected_model,
    sample_model,
)
from mlff.inspect.metrics import diversity, nonlinearity, nonmonotonicity, similarity_matrix, smoothness
from mlff.utils import finite_or_none, format_table, write_json

METRICS = ("nonlinearity", "nonmonotonicity", "diversity", "smoothness")
METRICS_FILE = "metrics.json"
SIMILARITY_FILE = "similarity.json"
SIMILARITY_PLOT = "similarity.png"


def layer_metrics(layer: SampledLayer) -> dict[str, Optional[float]]:
    """The paper's four metrics of one sampled layer.

    diversity is None for s = 1 (no pairs of dimensions); smoothness is None for
    encodings without learned bins (the smoothness loss is defined on bin values).
    """
    return {
        "nonlinearity": nonlinearity(layer.distances, layer.values),
        "nonmonotonicity": nonmonotonicity(layer.distances, layer.values),
        "diversity": diversity(layer.values) if layer.values.shape[1] > 1 else None,
        "smoothness": smoothness(layer.bin_values) if layer.bin_values is not None else None,
    }


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """default_label of each path; where different files share a label, the parent folders that tell
    them apart go in front ("ethanol/spline/seed0-best"), and " #2", " #3", ... mark a file given twice."""
    labels = [default_label(path) for path in paths]
    depths = [0] * len(labels)
    changed = True
    while changed:
        changed = False
        for label in set(labels):
            group = [i for i, other in enumerate(labels) if other == label]
            if len(group) < 2 or len({Path(paths[i]).resolve() for i in group}) == 1:
                continue
            for i in group:
                depths[i] += 1
                longer = _with_parents(paths[i], depths[i])
                changed = changed or longer != labels[i]
                labels[i] = longer
    numbered: list[str] = []
    for label in labels:
        repeats = sum(1 for other in numbered if other == label or other.startswith(f"{label} #"))
        numbered.append(f"{label} #{repeats + 1}" if repeats else label)
    return numbered


def _with_parents(path: Path, depth: int) -> str:
    """default_label behind `depth` more folders, e.g. "ethanol/spline/seed0-best" for a checkpoint
    (whose label already names its run folder) or "potentials/ethanol" for a potential file."""
    label = default_label(path)
    parents = Path(path).resolve().parent.parts
    skip = 1 if label.startswith(f"{parents[-1]}-") else 0
    folders = parents[max(len(parents) - skip - depth, 0) : len(parents) - skip]
    return "/".join([*folders, label])


def file_stem(label: str) -> str:
    """A label made safe as a file-name part (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def default_output_dir(paths: Sequence[Path]) -> Path:
    """runs/inspect/<label>, or runs/inspect/<label1>_vs_<label2>... for several models."""
    name = "_vs_".join(file_stem(label) for label in unique_labels(paths))
    return Path("runs") / "inspect" / name[:120]


def inspect_files(
    paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    n_points: int = DEFAULT_POINTS,
    weights: str = "ema",
) -> dict[str, Any]:
    """Metrics, plots and (for several models) the similarity matrix; writes PNGs and JSON to output_dir.

    Args:
        paths: potential files and/or training checkpoints.
        output_dir: folder for metrics.json, similarity.json and the PNGs (created).
        n_points: distances sampled per encoding (evenly spaced).
        weights: checkpoint weights, "ema" or "raw".

    Returns:
        The report: {"n_points", "models": [...], "similarity": {...} or None, "files": [...]}.
    """
    if not paths:
        raise ValueError("inspect needs at least one potential file or checkpoint")
    paths = [Path(path) for path in paths]
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    models = [load_inspected_model(path, weights, label) for path, label in zip(paths, unique_labels(paths))]
    written: list[Path] = []
    entries = []
    for model in models:
        sampled = sample_model(model, n_points)
        entries.append(_model_entry(model, sampled))
        written.extend(_model_plots(model, sampled, output))
    similarity = _similarity(models, n_points, output, written) if len(models) > 1 else None
    report = {
        "n_points": n_points,
        "models": entries,
        "similarity": similarity,
        "files": [str(path) for path in written],
    }
    metrics_path = output / METRICS_FILE
    write_json(metrics_path, finite_or_none({key: report[key] for key in ("n_points", "models")}))
    report["files"].append(str(metrics_path))
    if similarity is not None:
        similarity_path = output / SIMILARITY_FILE
        write_json(similarity_path, finite_or_none(similarity))
        report["files"].append(str(similarity_path))
    return finite_or_none(report)


def _model_entry(model: InspectedModel, sampled: list[SampledLayer]) -> dict[str, Any]:
    """describe(model) with each layer's metrics and their mean over layers."""
    entry = describe(model)
    for layer_entry, layer in zip(entry["layers"], sampled):
        layer_entry["metrics"] = layer_metrics(layer)
    entry["mean_over_layers"] = {name: _mean([layer["metrics"][name] for layer in entry["layers"]]) for name in METRICS}
    return entry


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def _model_plots(model: InspectedModel, sampled: list[SampledLayer], output: Path) -> list[Path]:
    """The three per-model PNGs: <label>_dimensions.png, <label>_bins_pca.png, <label>_derivative.png."""
    stem = file_stem(model.label)
    title = f"{model.label} ({model.backbone}, {model.source})"
    return [
        plots.plot_dimensions(sampled, title, output / f"{stem}_dimensions.png"),
        plots.plot_bin_pca(sampled, title, output / f"{stem}_bins_pca.png"),
        plots.plot_derivative(sampled, title, output / f"{stem}_derivative.png"),
    ]


def _similarity(models: list[InspectedModel], n_points: int, output: Path, written: list[Path]) -> dict[str, Any]:
    """The similarity matrix on the common distance range, its heat-map and its JSON form."""
    low, high = common_range(models)
    embeddings = [[layer.values for layer in sample_model(model, n_points, (low, high))] for model in models]
    raw, normalised = similarity_matrix(embeddings)
    labels = [model.label for model in models]
    written.append(plots.plot_similarity(labels, normalised, raw, output / SIMILARITY_PLOT))
    layers = [[min(len(a.layers), len(b.layers)) for b in models] for a in models]
    return {
        "labels": labels,
        "distance_range_a": [low, high],
        "n_points": n_points,
        "layers_compared": layers,
        "normalized": normalised.tolist(),
        "raw": raw.tolist(),
        "definition": "raw S(a,b) = mean over index-paired layers (first min(L_a, L_b)) and all dimension pairs "
        "(j, k) of Pearson rho^2(h_a_j, h_b_k); normalized = S(a,b) / sqrt(S(a,a) S(b,b)) over the same layers",
    }


def format_metrics(report: dict[str, Any]) -> str:
    """The metrics as an aligned table, one row per encoding layer (and a mean row for multi-layer models)."""
    header = ["model", "layer", "encoding", "s", "range (A)", *METRICS]
    rows = []
    for model in report["models"]:
        for layer in model["layers"]:
            low, high = layer["distance_range_a"]
            rows.append(
                [model["label"], layer["layer"], layer["encoding"], str(layer["size"]), f"{low:.2f}-{high:.2f}"]
                + [_number(layer["metrics"][name]) for name in METRICS]
            )
        if len(model["layers"]) > 1:
            rows.append([model["label"], "mean", "", "", ""] + [_number(model["mean_over_layers"][n]) for n in METRICS])
    note = (
        f"{report['n_points']} evenly spaced distances per encoding, no cutoff envelope; "
        "smoothness only for spline encodings (-)"
    )
    return _table(header, rows) + "\n" + note


def format_similarity(similarity: dict[str, Any]) -> str:
    """The similarity matrix as "normalised (raw)" cells."""
    labels = similarity["labels"]
    rows = [
        [label] + [f"{_number(n)} ({_number(r)})" for n, r in zip(normalised_row, raw_row)]
        for label, normalised_row, raw_row in zip(labels, similarity["normalized"], similarity["raw"])
    ]
    low, high = similarity["distance_range_a"]
    note = (
        f"similarity S(a,b)/sqrt(S(a,a) S(b,b)) (raw S in parentheses), {similarity['n_points']} distances over "
        f"[{low:.2f}, {high:.2f}] A, layers paired by index over each pair's common count"
    )
    return note + "\n" + _table(["", *labels], rows)


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns of the already formatted cells, kept as written."""
    return format_table(rows, header, fmt="plain", numparse=False)


__all__ = [
    "METRICS",
    "default_output_dir",
    "file_stem",
    "format_metrics",
    "format_similarity",
    "inspect_files",
    "layer_metrics",
    "unique_labels",
]
