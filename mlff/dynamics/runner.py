"""Run MD with a potential file and report stability and throughput."""

import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from mlff.data.reference import bond_lengths, find_bonds
from mlff.dynamics.ase_engine import MDSettings, run_ase_md
from mlff.dynamics.observers import StabilityObserver


def load_structure(spec: str | None, metadata: dict[str, Any]) -> Atoms:
    """The start structure: FILE (anything ASE reads), DATASET:INDEX, or None for the potential's own.

    A potential trained on one molecule carries start frames from its test
    split (metadata["reference"]["start_positions"]); None takes the first.
    """
    if spec is None:
        reference = metadata.get("reference") or {}
        if not reference.get("start_positions"):
            raise ValueError("this potential carries no start structure: pass --structure FILE or DATASET:INDEX")
        return Atoms(numbers=reference["atomic_numbers"], positions=reference["start_positions"][0])
    path, sep, index = spec.rpartition(":")
    if sep and index.isdigit() and Path(path).is_file():
        from mlff.data import read_frames

        frames = read_frames(path)
        if int(index) >= frames.num_frames:
            raise ValueError(f"{spec}: the dataset has {frames.num_frames} frames")
        numbers, positions, _, _ = frames.frame(int(index))
        return Atoms(numbers=numbers, positions=positions)
    if not Path(spec).is_file():
        raise FileNotFoundError(f"structure not found: {spec}")
    import ase.io

    return ase.io.read(spec)


def stability_observer(atoms: Atoms, metadata: dict[str, Any], max_deviation_a: float = 0.5) -> StabilityObserver:
    """Bonds and reference lengths from the potential's reference data when they match the
    structure, otherwise from the start structure itself."""
    reference = metadata.get("reference") or {}
    numbers = atoms.get_atomic_numbers().tolist()
    if reference.get("bonds") and reference.get("atomic_numbers") == numbers:
        bonds = np.array(reference["bonds"], dtype=np.int64)
        lengths = np.array(reference["mean_bond_lengths"], dtype=np.float64)
    else:
        bonds = find_bonds(atoms.get_atomic_numbers(), atoms.get_positions())
        lengths = bond_lengths(atoms.get_positions(), bonds)
    return StabilityObserver(bonds, lengths, max_deviation_a)


def run_md(
    potential_path: str | Path,
    structure: str | None = None,
    settings: MDSettings | None = None,
    output_dir: str | Path | None = None,
    device: str = "cpu",
    dtype: str = "float64",
) -> dict[str, Any]:
    """MD of one structure with a potential file through ASE; returns a JSON-able summary."""
    from mlff.calculators.ase import MLFFCalculator
    from mlff.export import load_potential

    settings = settings or MDSettings()
    potential = load_potential(potential_path, device=device, dtype=dtype)
    atoms = load_structure(structure, potential.metadata)
    calculator = MLFFCalculator(potential)
    atoms.calc = calculator
    observer = stability_observer(atoms, potential.metadata)
    measures = run_ase_md(atoms, settings, [observer], output_dir)
    potential_seconds = calculator.seconds_in_potential
    summary = {
        "potential": str(potential_path),
        "structure": structure or "potential reference start frame 0",
        "atoms": len(atoms),
        "settings": settings.__dict__,
        "engine": "ase",
        "stability": observer.summary(),
        "throughput": measures
        | {
            "potential_time_fraction": potential_seconds / measures["wall_seconds"] if measures["wall_seconds"] else 0.0
        },
    }
    if output_dir is not None:
        Path(output_dir, "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
