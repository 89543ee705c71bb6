"""MD cost against system size for liquid water: 32, 256 and 2048 molecules (issue 19's scaling figures).

The 32-water box of `build_box.py` replicated 2x2x2 and 4x4x4 (the same liquid, 8x and 64x the
atoms), timed with `mlff bench md` (torch engine, one replica, Langevin 300 K) on a potential of
the water config's architecture (examples/water/water.yaml: EGNN 64x4, spline, cutoff 5 A). The cost
of a step does not depend on the weights, so an untrained model (random weights, H and O) times the
same as the trained one; the step is kept short (0.1 fs) so the untrained forces cannot blow the
box apart within the timed steps. Usage:

    OMP_NUM_THREADS=1 python examples/water/bench_sizes.py --out runs/water/bench

writes OUT/bench_<N>.json per size (the bench's JSON: steps/s, atom-steps/s, CPU time) and
OUT/sizes.json, their rows with the number of molecules (examples/water/results/bench_sizes.json
is a copy, the source of the table in docs/periodic.md).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import ase.io

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_box import liquid_box_length, water_box  # noqa: E402

# (replication per axis, timed steps per round): a few steps for the largest (seconds each on one core).
SIZES = ((1, 40), (2, 10), (4, 3))


def untrained_potential(path: Path) -> Path:
    """The water config's architecture with random weights, exported (format v2: periodic)."""
    import torch

    from mlff.export import export_model
    from mlff.models import build_model
    from mlff.training import load_config

    config = load_config(HERE / "water.yaml", ["data.path=unused.extxyz"])
    torch.manual_seed(0)
    model = build_model(config.model, [1, 8], [0.0, 0.0], 1.0)
    return export_model(model, path, {"note": "untrained: for timing only"}, dtype="float32", config=config.model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/water/bench"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    potential = untrained_potential(args.out / "untrained_water.pt")
    box = water_box(32, liquid_box_length(32), seed=0)
    rows = []
    for repeat, steps in SIZES:
        structure = box.repeat(repeat)
        name = f"water{len(structure) // 3}"
        path = args.out / f"{name}.extxyz"
        ase.io.write(path, structure, format="extxyz")
        output = args.out / f"bench_{len(structure) // 3}.json"
        command = ["mlff", "--threads", "1", "bench", "md", str(potential), "--structure", f"{name}={path}"]
        command += ["--engines", "torch:1", "--steps", str(steps), "--rounds", str(args.rounds), "--warmup", "2"]
        command += ["--timestep-fs", "0.1", "-o", str(output)]
        subprocess.run(command, check=True)
        for row in json.loads(output.read_text()):
            rows.append({"molecules": len(structure) // 3, **row})
    (args.out / "sizes.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
