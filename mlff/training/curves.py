"""The learning curve of a run: validation force MAE against epochs, optimizer steps and CPU-hours."""

import json
from pathlib import Path
from typing import Any

from mlff.utils import atomic_write

CURVE_KEY = "mlff-learning-curve"


def write_learning_curve(history: list[dict[str, Any]], path: str | Path) -> None:
    """Plot `history` (the per-epoch records of metrics.jsonl) as a three-panel PNG at `path`.

    Panels share the y axis, validation force MAE in meV/A (log scale): against epochs, against
    optimizer steps, and against CPU-hours (the `cpu_seconds_total` of each record; records from
    before the CPU clock existed are left out of that panel).
    """
    from matplotlib.figure import Figure  # pyplot-free: no global backend state

    epochs = [r["epoch"] for r in history]
    mae = [r["val_force_mae_mev_per_a"] for r in history]
    figure = Figure(figsize=(12, 3.6))
    # Fixed margins: constrained layout measures every tick label and costs a third of the render.
    figure.subplots_adjust(left=0.075, right=0.99, bottom=0.14, top=0.97, wspace=0.06)
    axes = figure.subplots(1, 3, sharey=True)
    axes[0].plot(epochs, mae, marker=".")
    axes[0].set_xlabel("epoch")
    steps = [(r["steps"], r["val_force_mae_mev_per_a"]) for r in history if "steps" in r]
    if steps:
        axes[1].plot(*zip(*steps), marker=".")
    axes[1].set_xlabel("optimizer steps")
    cpu = [(r["cpu_seconds_total"] / 3600.0, r["val_force_mae_mev_per_a"]) for r in history if "cpu_seconds_total" in r]
    if cpu:
        axes[2].plot(*zip(*cpu), marker=".")
    axes[2].set_xlabel("CPU-hours")
    axes[0].set_ylabel("validation force MAE (meV/A)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    # The plotted points ride along as PNG text, so the figure can be checked against metrics.jsonl.
    points = {"epoch": epochs, "val_force_mae_mev_per_a": mae, "steps": steps, "cpu_hours": cpu}
    metadata = {CURVE_KEY: json.dumps(points)}
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=90, metadata=metadata))


def read_learning_curve(path: str | Path) -> dict[str, Any]:
    """The points a curve PNG was drawn from (epoch, val_force_mae_mev_per_a, steps and cpu_hours pairs)."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.text.get(CURVE_KEY) if hasattr(image, "text") else None
    if text is None:
        raise ValueError(f"{path} is not an mlff learning curve (no {CURVE_KEY!r} text chunk)")
    return json.loads(text)
