"""MD throughput of the engines (torch eager and compiled, torch-sim, OpenMM, ASE): steps/s, ns/day
and atom-steps/s, measured in one run.

Each (structure, engine, replicas) configuration is built through the engine registry with the
same settings (Langevin at 300 K by default), warmed up, then timed in rounds in which the
configurations take turns, so that their ratios hold on a busy machine (absolute CPU times do
not; absolute times mean something only on a GPU). ns/day counts simulated time summed over
replicas: R replicas of the torch engine advance R trajectories per batch step.
"""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms

from mlff import utils
from mlff.dynamics.engines import Engine, build_engine
from mlff.dynamics.settings import MDSettings, throughput_measures
from mlff.export.load import Potential, dtype_name, load_potential

DEFAULT_CONFIGURATIONS = (("torch", 1), ("torch", 8), ("torch", 64), ("openmm", 1), ("ase", 1))


@dataclass
class Configuration:
    """One timed engine: its structure's name, the engine, the replica count."""

    structure: str
    engine: str
    replicas: int


def parse_configuration(text: str) -> tuple[str, int]:
    """ENGINE[:REPLICAS] text to a pair: "torch:64" -> ("torch", 64); "ase" -> ("ase", 1)."""
    engine, _, replicas = text.partition(":")
    if replicas and not replicas.isdigit():
        raise ValueError(f"engine configuration {text!r}: expected ENGINE or ENGINE:REPLICAS, e.g. torch:8")
    return engine, int(replicas or 1)


def md_benchmark(
    potential_path: str,
    structures: dict[str, Atoms],
    configurations: tuple[tuple[str, int], ...] = DEFAULT_CONFIGURATIONS,
    steps: int = 100,
    rounds: int = 3,
    warmup: int = 10,
    settings: MDSettings | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (structure, engine, replicas): median steps/s over `rounds` of `steps` steps,
    ns/day (summed over replicas), atom-steps/s, the share of time in the potential, the ratio to
    the first configuration of the same structure."""
    settings = settings or MDSettings(temperature_k=300.0, thermostat="langevin", friction_per_fs=0.01)
    potential = load_potential(potential_path, device=device, dtype=dtype)
    runs: list[tuple[Configuration, Engine]] = []
    for name, atoms in structures.items():
        for engine_name, replicas in configurations:
            configuration = Configuration(name, engine_name, replicas)
            run_settings = MDSettings(**{**settings.to_dict(), "replicas": replicas})
            engine = build_engine(engine_name, potential, [atoms] * replicas, run_settings)
            engine.advance(warmup)
            runs.append((configuration, engine))
    seconds: dict[int, list[float]] = {index: [] for index in range(len(runs))}
    cpu_seconds: dict[int, list[float]] = {index: [] for index in range(len(runs))}
    potential_seconds: dict[int, list[float | None]] = {index: [] for index in range(len(runs))}
    for _ in range(rounds):
        for index, (_, engine) in enumerate(runs):
            before = engine.potential_seconds
            started, cpu_started = time.perf_counter(), time.process_time()
            engine.advance(steps)
            if potential.device.type == "cuda":
                torch.cuda.synchronize(potential.device)
            seconds[index].append(time.perf_counter() - started)
            cpu_seconds[index].append(time.process_time() - cpu_started)
            after = engine.potential_seconds
            potential_seconds[index].append(None if after is None else after - before)
    rows = [
        _row(
            configuration,
            structures[configuration.structure],
            steps,
            seconds[index],
            cpu_seconds[index],
            potential_seconds[index],
            settings,
            potential,
        )
        for index, (configuration, _) in enumerate(runs)
    ]
    first: dict[str, float] = {}
    for row in rows:
        first.setdefault(row["structure"], row["ns_per_day"])
        row["ns_per_day_ratio_to_first"] = row["ns_per_day"] / first[row["structure"]]
    return rows


def _row(
    configuration: Configuration,
    atoms: Atoms,
    steps: int,
    seconds: list[float],
    cpu_seconds: list[float],
    potential_seconds: list[float | None],
    settings: MDSettings,
    potential: Potential,
) -> dict[str, Any]:
    median = float(np.median(seconds))
    cpu_measures = throughput_measures(
        steps, float(np.median(cpu_seconds)), settings.timestep_fs, len(atoms) * configuration.replicas
    )
    measures = throughput_measures(steps, median, settings.timestep_fs, len(atoms) * configuration.replicas)
    shares = [p / s for p, s in zip(potential_seconds, seconds) if p is not None]
    return {
        "structure": configuration.structure,
        "atoms": len(atoms),
        "engine": configuration.engine,
        "replicas": configuration.replicas,
        "steps_per_second": measures["steps_per_second"],
        "ns_per_day": measures["ns_per_day"] * configuration.replicas,
        "ns_per_day_per_replica": measures["ns_per_day"],
        "atom_steps_per_second": measures["atom_steps_per_second"],
        "potential_time_fraction": float(np.median(shares)) if shares else None,
        "round_seconds": seconds,
        # Process CPU time (all threads): on a loaded machine the steady figure beside the wall time.
        "round_cpu_seconds": cpu_seconds,
        "atom_steps_per_cpu_second": cpu_measures["atom_steps_per_second"],
        "timestep_fs": settings.timestep_fs,
        "thermostat": settings.thermostat,
        "device": str(potential.device),
        "dtype": dtype_name(potential.dtype),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "potential_format": potential.metadata.get("container", "torchscript"),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (the share of wall time spent in the potential in percent)."""
    headers = [
        "structure (atoms)",
        "engine",
        "replicas",
        "steps/s",
        "ns/day (all replicas)",
        "atom-steps/s",
        "in potential",
        "ns/day vs first",
        "atom-steps/CPU-s",
    ]
    cells = [
        [
            f"{row['structure']} ({row['atoms']})",
            row["engine"],
            row["replicas"],
            row["steps_per_second"],
            row["ns_per_day"],
            row["atom_steps_per_second"],
            "-" if row["potential_time_fraction"] is None else f"{100 * row['potential_time_fraction']:.0f}%",
            row["ns_per_day_ratio_to_first"],
            row.get("atom_steps_per_cpu_second"),
        ]
        for row in rows
    ]
    return utils.format_table(cells, headers, floatfmt=("", "", "", ".1f", ".3f", ".0f", "", ".2f", ".0f"))
