"""Energy+force calls per second of potential files on given structures.

Times the deployment path (the TorchScript file through `load_potential`), one
structure per call, after warm-up calls. Compare potentials as ratios measured
in one run: absolute CPU times depend on the machine and its load.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from mlff.export import load_potential
from mlff.utils import dtype_name


def calls_per_second(potential, atoms: Atoms, calls: int = 100, warmup: int = 10) -> dict[str, float]:
    """Median and mean time of one energy+force call on `atoms`.

    Args:
        potential: a loaded `Potential`.
        atoms: the structure (its positions in Angstrom).
        calls: timed calls.
        warmup: untimed calls first (TorchScript optimises on the first runs).

    Returns:
        calls_per_second (from the median), median_ms, mean_ms.
    """
    numbers, positions = atoms.get_atomic_numbers(), atoms.get_positions()
    for _ in range(warmup):
        potential.energy_and_forces(numbers, positions)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        potential.energy_and_forces(numbers, positions)
        if potential.device.type == "cuda":
            torch.cuda.synchronize(potential.device)
        seconds.append(time.perf_counter() - started)
    median = float(np.median(seconds))
    return {"calls_per_second": 1.0 / median, "median_ms": 1000.0 * median, "mean_ms": 1000.0 * float(np.mean(seconds))}


def speed_benchmark(
    potentials: list[str | Path],
    structures: dict[str, Atoms],
    calls: int = 100,
    device: str = "cpu",
    dtype: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (potential, structure): calls/s and the ratio to the first potential's."""
    rows = []
    for path in potentials:
        potential = load_potential(path, device=device, dtype=dtype)
        model = potential.metadata.get("model") or {}
        for name, atoms in structures.items():
            row = {
                "potential": str(path),
                "backbone": model.get("backbone"),
                "encoding": model.get("encoding"),
                "parameters": model.get("parameters"),
                "structure": name,
                "atoms": len(atoms),
                "dtype": dtype_name(potential.dtype),
                "device": device,
                "threads": torch.get_num_threads(),
            }
            row.update(calls_per_second(potential, atoms, calls))
            rows.append(row)
    first = {row["structure"]: row["calls_per_second"] for row in rows[: len(structures)]}
    for row in rows:
        row["ratio_to_first"] = row["calls_per_second"] / first[row["structure"]]
    return rows
