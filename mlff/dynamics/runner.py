"""Run MD with a potential file and report stability and throughput."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from mlff.data.reference import bond_lengths, find_bonds
from mlff.dynamics.ase_engine import MDSettings, run_ase_md
from mlff.dynamics.observers import StabilityObserver

ENGINES = ("ase", "torch")


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
    engine: str = "ase",
    replicas: int = 1,
) -> dict[str, Any]:
    """MD of one structure with a potential file; returns a JSON-able summary.

    Args:
        engine: "ase" (ASE's integrators and the mlff calculator, one replica) or "torch"
            (`mlff.dynamics.torch_engine`: `replicas` copies in one potential call per step).
        replicas: independent replicas (torch engine only), replica k seeded `settings.seed + k`.
    """
    from mlff.export import load_potential

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ase" and replicas != 1:
        raise ValueError(f"the ASE engine runs one replica; use engine='torch' for {replicas} replicas")
    settings = settings or MDSettings()
    potential = load_potential(potential_path, device=device, dtype=dtype)
    atoms = load_structure(structure, potential.metadata)
    if engine == "ase":
        stability, measures = _run_ase(potential, atoms, settings, output_dir)
    else:
        stability, measures = _run_torch(potential, atoms, settings, replicas, output_dir)
    summary = {
        "potential": str(potential_path),
        "structure": structure or "potential reference start frame 0",
        "atoms": len(atoms),
        "settings": settings.__dict__,
        "engine": engine,
        "stability": stability,
        "throughput": measures,
    }
    if output_dir is not None:
        Path(output_dir, "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_ase(
    potential: Any, atoms: Atoms, settings: MDSettings, output_dir: str | Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stability summary and throughput of one ASE run."""
    from mlff.calculators.ase import MLFFCalculator

    calculator = MLFFCalculator(potential)
    atoms.calc = calculator
    observer = stability_observer(atoms, potential.metadata)
    measures = run_ase_md(atoms, settings, [observer], output_dir)
    wall = measures["wall_seconds"]
    measures["potential_time_fraction"] = calculator.seconds_in_potential / wall if wall else 0.0
    return observer.summary(), measures


def _run_torch(
    potential: Any, atoms: Atoms, settings: MDSettings, replicas: int, output_dir: str | Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stability summary over the replicas and throughput of one torch-engine run."""
    from mlff.calculators.ase import check_atoms
    from mlff.dynamics.torch_engine import run_torch_md

    check_atoms(atoms, potential.species)
    observers = [stability_observer(atoms, potential.metadata) for _ in range(replicas)]
    measures = run_torch_md(
        potential,
        torch.as_tensor(atoms.get_atomic_numbers()),
        torch.as_tensor(atoms.get_positions()),
        settings,
        replicas,
        [[observer] for observer in observers],
        output_dir,
    )
    return replica_stability(observers), measures


def replica_stability(observers: list[StabilityObserver]) -> dict[str, Any]:
    """One stability summary over replicas: collapsed if any replica collapsed, the shortest
    stable time, the largest deviation, the collapsed replicas' indices and each replica's summary."""
    summaries = [observer.summary() for observer in observers]
    return {
        "collapsed": any(s["collapsed"] for s in summaries),
        "collapsed_replicas": [k for k, s in enumerate(summaries) if s["collapsed"]],
        "replicas": len(summaries),
        "stable_time_ps": min(s["stable_time_ps"] for s in summaries),
        "largest_bond_deviation_a": max(s["largest_bond_deviation_a"] for s in summaries),
        "bonds": summaries[0]["bonds"],
        "per_replica": summaries,
    }
