"""`mlff bench threads`: energy+force calls of one potential at 1 vs N intra-op threads, by system size.

The system is a batch of k replicas of the potential's start frame (k x atoms per call). Thread
counts take turns in rounds, so a load that comes and goes falls on all of them alike; per size the
median over rounds of the wall and the process CPU time per call are reported. This measures
`mlff.threads.SECOND_THREAD_MIN_ATOMS`, the size from which a second thread pays.
"""

import statistics
import time
from typing import Any

import numpy as np
import torch


def thread_benchmark(
    potential_path: str, replicas: list[int], threads: tuple[int, ...] = (1, 2), rounds: int = 5
) -> list[dict[str, Any]]:
    """One row per replica count: atoms, and per thread count the median ms per call (wall and CPU).

    Args:
        potential_path: potential file or shipped name (its reference start frame is replicated).
        replicas: batch sizes k to time.
        threads: thread counts, taking turns within each round; ratios are to the first.
        rounds: rounds per size.
    """
    from mlff.export import load_potential

    if rounds < 1 or not replicas or min(replicas) < 1:
        raise ValueError("rounds and every replica count must be >= 1")
    potential = load_potential(potential_path)
    reference = potential.metadata.get("reference") or {}
    if "start_positions" not in reference:
        raise ValueError(f"{potential_path} carries no reference start frame to replicate")
    start = np.asarray(reference["start_positions"][0])
    numbers = np.asarray(reference["atomic_numbers"])
    previous = torch.get_num_threads()
    rows = []
    try:
        for k in replicas:
            atoms = k * len(numbers)
            args = (
                torch.as_tensor(np.tile(start, (k, 1)), dtype=potential.dtype),
                torch.as_tensor(np.tile(numbers, k), dtype=torch.long),
                torch.arange(k).repeat_interleave(len(numbers)),
                torch.zeros(k, 3, 3, dtype=potential.dtype),
                torch.zeros(k, 3, dtype=torch.bool),
            )
            calls = max(3, 2000 // atoms)
            wall: dict[int, list[float]] = {t: [] for t in threads}
            cpu: dict[int, list[float]] = {t: [] for t in threads}
            for _ in range(rounds):
                for count in threads:
                    torch.set_num_threads(count)
                    potential(*args)
                    wall_started, cpu_started = time.perf_counter(), time.process_time()
                    for _ in range(calls):
                        potential(*args)
                    wall[count].append(1000.0 * (time.perf_counter() - wall_started) / calls)
                    cpu[count].append(1000.0 * (time.process_time() - cpu_started) / calls)
            first = threads[0]
            row: dict[str, Any] = {"replicas": k, "atoms": atoms, "calls_per_round": calls}
            for count in threads:
                row[f"wall_ms_{count}t"] = statistics.median(wall[count])
                row[f"cpu_ms_{count}t"] = statistics.median(cpu[count])
                row[f"ratio_{count}t_to_{first}t"] = statistics.median(b / a for a, b in zip(wall[first], wall[count]))
            rows.append(row)
    finally:
        torch.set_num_threads(previous)
    return rows
