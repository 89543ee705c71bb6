"""`mlff bench stability [--molecules ...] [--seeds 5] [--protocol NAME|FILE] [--quick]`: the MD17 stability table.

The potentials and protocols are the ones shipped inside the package (`mlff.resources`), so the
command runs from any directory.
"""

import argparse
import re
from pathlib import Path
from typing import Any

from mlff.utils import DTYPE_NAMES

DEFAULT_PROTOCOL = "md17-stability-cpu"
STABILITY_ENGINES = ("torch", "torch-compiled")


def add_parser(benches: Any) -> None:
    parser = benches.add_parser(
        "stability",
        help="the MDsim stability protocol on each shipped potential (all seeds in one torch batch): one table",
    )
    parser.add_argument("--molecules", nargs="+", default=None, help="shipped potentials to run (default: all)")
    parser.add_argument("--potentials-dir", default=None, help="where the potentials are (default: the shipped ones)")
    parser.add_argument("--potential", default=None, help="a potential file outside the list (with --data)")
    parser.add_argument("--data", default=None, help="the dataset of --potential's molecule (reference statistics)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per molecule (default: the protocol's, 5)")
    parser.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        help=f"a shipped MD protocol's name or a YAML file (default {DEFAULT_PROTOCOL}: the 50 ps CPU version)",
    )
    parser.add_argument("--quick", action="store_true", help="1 ps of the protocol: a few minutes on 2 CPU cores")
    parser.add_argument("--time", default=None, help="override the protocol's length, e.g. 10ps")
    parser.add_argument(
        "--engine",
        choices=STABILITY_ENGINES,
        default="torch",
        help="the batched engine: torch, or torch-compiled (the same MD through one compiled graph: 1.8x the "
        "steps/s for naphthalene's 5 seeds on one CPU thread; half a minute to compile, again when a seed leaves)",
    )
    parser.add_argument(
        "--part",
        default=None,
        metavar="I/N",
        help="run only the I-th of N contiguous ranges of each molecule's seeds (e.g. 1/2 and 2/2 as two "
        "processes, one per core: a seed's trajectory does not depend on its batch); the part that "
        "finishes last merges them into the molecule's row",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="default: the file's")
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
    from mlff.resources import potential_path, potentials_dir, protocol_path

    overrides: dict[str, Any] = {}
    if args.seeds is not None:
        overrides["replicas"] = args.seeds
    if args.quick or args.time:
        overrides["time"] = args.time or QUICK_TIME
    protocol_file = protocol_path(args.protocol)
    settings = load_protocol(protocol_file, **overrides)
    protocol = protocol_label(protocol_file) + (f" ({overrides['time']})" if "time" in overrides else "")
    if args.potential:
        if args.molecules:
            raise ValueError("give --potential (with --data) or --molecules, not both")
        path = potential_path(args.potential)
        targets = [StabilityTarget(path.stem, path, Path(args.data) if args.data else None)]
    else:
        targets = shipped_targets(args.potentials_dir or potentials_dir(), args.molecules)
    output_dir = Path(args.output_dir)
    part = parse_part(args.part) if args.part else None
    rows = []
    for target in targets:
        seeds = f"part {args.part} of {settings.replicas} seeds" if part else f"{settings.replicas} seeds"
        print(f"{target.name}: {seeds} x {settings.steps} steps ...", flush=True)
        row = run_target(target, settings, output_dir, args.device, args.dtype, args.engine, part)
        if row is None:
            print(f"{target.name}: part {args.part} finished; the row waits for the other parts", flush=True)
            continue
        rows.append(row)
        if args.update_cards:
            print(f"updated {record_in_card(target, rows[-1], protocol)}")
    if not rows:
        return 0
    report = write_report(output_dir, rows, settings, protocol)
    print(format_table(rows))
    print(f"wrote {output_dir / 'stability.json'} and {report}")
    return 0


def parse_part(text: str) -> tuple[int, int]:
    """ "I/N" as (I, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--part {text!r}: expected I/N, e.g. 1/2")
    return int(match.group(1)), int(match.group(2))


def protocol_label(protocol: Path) -> str:
    """A shipped protocol as `md/<name>.yaml`, its place in the source tree (reports and cards then read
    the same on every machine and install), any other protocol file as given."""
    from mlff.resources import protocols_dir

    if protocol.resolve().parent == protocols_dir().resolve():
        return f"md/{protocol.name}"
    return str(protocol)
