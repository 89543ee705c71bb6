"""Per-call time of potentials in alternating rounds (wall and process CPU), one thread.

    python scripts/per_call_alternating.py potentials/ethanol.pt ethanol.pt2 [-o per_call.json]   # ratios to the first

Each round times 20 energy+force calls of every potential in turn on the first potential's start
frame, so that a change of machine load hits all alike; medians of 15 rounds.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mlff.export.load import load_potential
from mlff.utils import write_json


def main(paths: list[str], rounds: int = 15, calls: int = 20, out: Path | None = None) -> None:
    torch.set_num_threads(1)
    potentials = [load_potential(path) for path in paths]
    reference = potentials[0].metadata["reference"]
    numbers = np.array(reference["atomic_numbers"])
    positions = np.array(reference["start_positions"])[0]
    for potential in potentials:
        for _ in range(10):
            potential.energy_and_forces(numbers, positions)
    wall: dict[str, list[float]] = {path: [] for path in paths}
    cpu: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(rounds):
        for path, potential in zip(paths, potentials):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(calls):
                potential.energy_and_forces(numbers, positions)
            wall[path].append((time.perf_counter() - wall_start) / calls * 1e3)
            cpu[path].append((time.process_time() - cpu_start) / calls * 1e3)
    rows = {path: {"wall_ms": float(np.median(wall[path])), "cpu_ms": float(np.median(cpu[path]))} for path in paths}
    first = rows[paths[0]]
    for path, row in rows.items():
        print(
            f"{path:40s} wall {row['wall_ms']:.2f} ms  cpu {row['cpu_ms']:.2f} ms  "
            f"speed-up wall {first['wall_ms'] / row['wall_ms']:.2f} cpu {first['cpu_ms'] / row['cpu_ms']:.2f}"
        )
    print(json.dumps(rows))
    if out is not None:
        write_json(out, [{"potential": path, **row} for path, row in rows.items()])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("potentials", nargs="+", help="potential files (TorchScript or AOTInductor packages)")
    parser.add_argument("-o", "--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    main(args.potentials, out=args.out)
