"""Where an AOTInductor package's time goes on one device: load, first calls, then steady calls.

    python scripts/aoti_calls.py PACKAGE.pt2 [FILE.pt] --device cuda --calls 50

Prints as it goes (flushed), so a run cut short by a timeout still shows the stage it reached; the
GPU session of 2026-11-30 saw `mlff bench md` on the aspirin package not finish 620 steps in 40 s.
Each file is timed on its own start frame (metadata reference), energy and forces per call,
synchronised on CUDA.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from mlff.export import load_potential


def timed(function, device: str) -> float:
    """Seconds of one call of `function`, the device synchronised before and after."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def profile(path: str, device: str, calls: int) -> None:
    """Print the load time, the first five calls and the median of `calls` more (milliseconds)."""
    started = time.perf_counter()
    potential = load_potential(path, device=device)
    print(f"{path}: loaded in {time.perf_counter() - started:.2f} s", flush=True)
    reference = potential.metadata["reference"]
    numbers = np.asarray(reference["atomic_numbers"])
    positions = np.asarray(reference["start_positions"])[0]

    def call() -> None:
        potential.energy_and_forces(numbers, positions)

    first = [1e3 * timed(call, device) for _ in range(5)]
    print(f"{path}: first calls (ms) " + " ".join(f"{t:.1f}" for t in first), flush=True)
    steady = [1e3 * timed(call, device) for _ in range(calls)]
    print(f"{path}: median of {calls} calls {statistics.median(steady):.2f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="potential files (AOTI packages or TorchScript)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for path in args.files:
        profile(path, args.device, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
