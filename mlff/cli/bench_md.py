"""`mlff bench md NAME_OR_FILE [--structure NAME=SPEC ...] [--engines torch:1 torch:8 ...]`: MD throughput, JSON."""

import argparse
from typing import Any

from mlff.utils import DTYPE_NAMES


def add_parser(benches: Any) -> None:
    from mlff.cli.bench import add_structure_argument

    parser = benches.add_parser(
        "md", help="MD steps/s and ns/day of the torch (1, 8, 64 replicas), OpenMM and ASE engines"
    )
    parser.add_argument("potential", help="potential file (.pt) or a shipped potential's name (ethanol, ...)")
    add_structure_argument(parser)
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["torch:1", "torch:8", "torch:64", "openmm", "ase"],
        metavar="ENGINE[:REPLICAS]",
        help="configurations to time (default: torch:1 torch:8 torch:64 openmm ase); engines: torch, "
        "torch-compiled (torch.compile of the padded graph; CUDA graphs on a GPU), torch-sim (mlff[torchsim]), "
        "openmm, ase",
    )
    parser.add_argument("--steps", type=int, default=100, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, configurations taking turns (median reported)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument(
        "--protocol",
        default=None,
        help="MD protocol for the settings: a shipped one's name (md17-stability-cpu, ...) or a YAML file "
        "(default: Langevin 300 K)",
    )
    parser.add_argument(
        "--timestep-fs", type=float, default=None, help="MD step (0.001: near-fixed geometry for foreign molecules)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="default: the file's")
    parser.add_argument("-o", "--output", default="bench_md.json", help="JSON output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.bench.md import format_table, md_benchmark, parse_configuration
    from mlff.cli.bench import structures_from_args
    from mlff.dynamics import MDSettings, load_protocol
    from mlff.resources import protocol_path
    from mlff.utils import write_json

    overrides = {"timestep_fs": args.timestep_fs} if args.timestep_fs is not None else {}
    if args.protocol:
        settings = load_protocol(protocol_path(args.protocol), **overrides)
    else:
        settings = MDSettings(temperature_k=300.0, thermostat="langevin", **overrides)
    configurations = tuple(parse_configuration(text) for text in args.engines)
    structures = structures_from_args(args.structure, args.potential)
    rows = md_benchmark(
        args.potential,
        structures,
        configurations,
        args.steps,
        args.rounds,
        args.warmup,
        settings,
        args.device,
        args.dtype,
    )
    write_json(args.output, rows)
    print(format_table(rows))
    print(f"wrote {args.output}")
    return 0
