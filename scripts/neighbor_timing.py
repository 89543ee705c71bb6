"""CPU time of the periodic neighbour search, cell list against all pairs (minimum image), by size.

    OMP_NUM_THREADS=1 python scripts/neighbor_timing.py [--sizes 512 1024 2048 4096]

Random atoms in a cubic box at 0.1 atoms/A^3 (liquid density), cutoff 5 A, float32, one thread;
`periodic_neighbor_pairs` forced either way with its `cell_list_min_atoms` argument; mean CPU ms
of 3 calls after one warm-up. Prints one line per size (the basis of `CELL_LIST_MIN_ATOMS`).
"""

import argparse
import time

import numpy as np
import torch

from mlff.models.neighbors import periodic_neighbor_pairs


def cpu_ms(positions: torch.Tensor, cell: torch.Tensor, threshold: int, calls: int = 3) -> float:
    batch = torch.zeros(positions.size(0), dtype=torch.long)
    pbc = torch.ones(1, 3, dtype=torch.bool)
    periodic_neighbor_pairs(positions, batch, 1, 5.0, cell, pbc, threshold)
    started = time.process_time()
    for _ in range(calls):
        periodic_neighbor_pairs(positions, batch, 1, 5.0, cell, pbc, threshold)
    return (time.process_time() - started) / calls * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes:
        edge = (size / 0.1) ** (1.0 / 3.0)
        positions = torch.tensor(np.random.default_rng(0).uniform(0.0, edge, (size, 3)), dtype=torch.float32)
        cell = (torch.eye(3) * edge).unsqueeze(0)
        cell_list, all_pairs = cpu_ms(positions, cell, 0), cpu_ms(positions, cell, 10**9)
        print(f"{size} atoms ({edge:.1f} A box): cell list {cell_list:.1f} ms, all pairs {all_pairs:.1f} ms")


if __name__ == "__main__":
    main()
