"""`mlff bench speed|openmm|md|ablation|stability|train ...`: benchmarks that print a table and write JSON.

speed: energy+force calls/s of potential files; openmm: MD steps/s of OpenMM's TorchForce, a
PythonForce and ASE; md: steps/s and ns/day of the MD engines (`mlff.cli.bench_md`); ablation:
the paper's encoding ablation (`mlff.cli.bench_ablation`); stability: the MD17 stability table
(`mlff.cli.bench_stability`); train: speed of the training step (`mlff.cli.bench_train`).
"""

import argparse
from typing import Any

from mlff.cli import bench_ablation, bench_collapse, bench_md, bench_stability, bench_threads, bench_train
from mlff.utils import DTYPE_NAMES


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (JSON output)")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH")
    benches.required = True
    speed = benches.add_parser("speed", help="energy+force calls per second of potential files")
    speed.add_argument("potentials", nargs="+", help="potential files (.pt) or shipped names; ratios are to the first")
    add_structure_argument(speed)
    speed.add_argument("--calls", type=int, default=100, help="timed calls per structure")
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="default: the file's")
    speed.add_argument("-o", "--output", default="bench_speed.json", help="JSON output")
    speed.set_defaults(run=run_speed)
    md = benches.add_parser(
        "openmm", help="MD steps/s: OpenMM TorchForce vs OpenMM PythonForce vs ASE (Langevin, 0.5 fs, 300 K)"
    )
    md.add_argument("potential", help="potential file (.pt) or a shipped potential's name (ethanol, ...)")
    add_structure_argument(md)
    md.add_argument("--steps", type=int, default=200, help="timed MD steps per engine and round")
    md.add_argument("--rounds", type=int, default=5, help="timed rounds, engines taking turns (median reported)")
    md.add_argument("--warmup", type=int, default=20, help="untimed MD steps first")
    md.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="default: the file's")
    md.add_argument(
        "--timestep-fs", type=float, default=0.5, help="MD step (0.001: near-fixed geometry for foreign molecules)"
    )
    md.add_argument("-o", "--output", default="bench_openmm.json", help="JSON output")
    md.set_defaults(run=run_openmm)
    bench_md.add_parser(benches)
    bench_ablation.add_parser(benches)
    bench_stability.add_parser(benches)
    bench_collapse.add_parser(benches)
    bench_train.add_parser(benches)
    bench_threads.add_parser(benches)


def run_speed(args: argparse.Namespace) -> int:
    from mlff.bench.speed import speed_benchmark
    from mlff.utils import format_table, write_json

    structures = structures_from_args(args.structure, args.potentials[0])
    rows = speed_benchmark(args.potentials, structures, args.calls, args.device, args.dtype)
    write_json(args.output, rows)
    columns = ("potential", "structure", "atoms", "calls_per_second", "median_ms", "ratio_to_first")
    print(
        format_table(
            [[row[key] for key in columns] for row in rows],
            ["potential", "structure", "atoms", "calls/s", "ms/call", "ratio"],
            fmt="plain",
            floatfmt=("", "", "", ".1f", ".2f", ".2f"),
        )
    )
    print(f"wrote {args.output}")
    return 0


def run_openmm(args: argparse.Namespace) -> int:
    from mlff.bench.openmm import openmm_benchmark
    from mlff.utils import format_table, write_json

    structures = structures_from_args(args.structure, args.potential)
    rows = openmm_benchmark(
        args.potential, structures, args.steps, args.warmup, args.dtype, args.timestep_fs, args.rounds
    )
    write_json(args.output, rows)
    columns = ("structure", "atoms", "engine", "steps_per_second", "ns_per_day", "ratio_to_ase", "max_bond_deviation_a")
    print(
        format_table(
            [[row[key] for key in columns] for row in rows],
            ["structure", "atoms", "engine", "steps/s", "ns/day", "vs ASE", "max dbond A"],
            fmt="plain",
            floatfmt=("", "", "", ".1f", ".3f", ".2f", ".3g"),
        )
    )
    print(f"wrote {args.output}")
    return 0


def add_structure_argument(parser: argparse.ArgumentParser) -> None:
    """The repeatable --structure NAME=SPEC option that structures_from_args reads."""
    parser.add_argument(
        "--structure",
        action="append",
        default=None,
        metavar="NAME=SPEC",
        help="molecule, SPEC a FILE or DATASET:INDEX (repeatable; default: the potential's start frame)",
    )


def structures_from_args(texts: list[str] | None, potential: str) -> dict[str, Any]:
    """Named structures from --structure NAME=SPEC options, or the potential's first start frame."""
    from mlff.dynamics import load_structure
    from mlff.export import read_metadata

    if not texts:
        return {"start frame": load_structure(None, read_metadata(potential))}
    specs = dict(_name_and_spec(text) for text in texts)
    return {name: load_structure(spec, {}) for name, spec in specs.items()}


def _name_and_spec(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise ValueError(f"--structure {text!r} must look like NAME=FILE or NAME=DATASET:INDEX")
    return name, spec
