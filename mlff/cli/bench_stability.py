"""`mlff bench stability [--molecules ...] [--seeds 5] [--protocol md/...yaml] [--quick]`: the MD17 stability table."""

import argparse
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_PROTOCOL = REPOSITORY / "md" / "md17-stability-cpu.yaml"


def add_parser(benches: Any) -> None:
    parser = benches.add_parser(
        "stability",
        help="the MDsim stability protocol on each shipped potential (all seeds in one torch batch): one table",
    )
    parser.add_argument("--molecules", nargs="+", default=None, help="shipped potentials to run (default: all)")
    parser.add_argument("--potentials-dir", default=str(REPOSITORY / "potentials"), help="where the potentials are")
    parser.add_argument("--potential", default=None, help="a potential outside the list (with --data)")
    parser.add_argument("--data", default=None, help="the dataset of --potential's molecule (reference statistics)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per molecule (default: the protocol's, 5)")
    parser.add_argument("--protocol", default=str(DEFAULT_PROTOCOL), help="MD protocol (default: 50 ps CPU version)")
    parser.add_argument("--quick", action="store_true", help="1 ps of the protocol: a few minutes on 2 CPU cores")
    parser.add_argument("--time", default=None, help="override the protocol's length, e.g. 10ps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the file's")
    parser.add_argument(
        "--update-cards",
        action="store_true",
        help="write each finished molecule's row into the stability section of its potential's model card",
    )
    parser.add_argument("-o", "--output-dir", default="runs/stability", help="runs, stability.json and report.md")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.bench.stability import (
        QUICK_TIME,
        StabilityTarget,
        format_table,
        record_in_card,
        run_target,
        shipped_targets,
        write_report,
    )
    from mlff.dynamics import load_protocol

    overrides: dict[str, Any] = {}
    if args.seeds is not None:
        overrides["replicas"] = args.seeds
    if args.quick or args.time:
        overrides["time"] = args.time or QUICK_TIME
    settings = load_protocol(args.protocol, **overrides)
    protocol = protocol_label(args.protocol) + (f" ({overrides['time']})" if "time" in overrides else "")
    if args.potential:
        if args.molecules:
            raise ValueError("give --potential (with --data) or --molecules, not both")
        targets = [
            StabilityTarget(Path(args.potential).stem, Path(args.potential), Path(args.data) if args.data else None)
        ]
    else:
        targets = shipped_targets(args.potentials_dir, args.molecules)
    output_dir = Path(args.output_dir)
    rows = []
    for target in targets:
        print(f"{target.name}: {settings.replicas} seeds x {settings.steps} steps ...", flush=True)
        rows.append(run_target(target, settings, output_dir, args.device, args.dtype))
        if args.update_cards:
            print(f"updated {record_in_card(target, rows[-1], protocol)}")
    report = write_report(output_dir, rows, settings, protocol)
    print(format_table(rows))
    print(f"wrote {output_dir / 'stability.json'} and {report}")
    return 0


def protocol_label(protocol: str) -> str:
    """The protocol's path relative to the repository when it lies inside (reports and cards read the same
    on every machine), else as given."""
    path = Path(protocol).resolve()
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else protocol
