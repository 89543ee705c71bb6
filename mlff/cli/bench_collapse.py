"""`mlff bench collapse NAME_OR_FILE... [--protocol P] [--frames-before 3] [--dft pbe/def2-svp|none] [--out DIR]`.

Runs the stability protocol on each potential, and for every replica that collapses names the
bond, writes the frames around it and compares DFT with the model on the last stable frames
(`mlff.bench.collapse`): a table of collapses with a verdict `hole`, `chemistry` or `unclear`.
"""

import argparse
from pathlib import Path
from typing import Any

from mlff.cli.bench_stability import STABILITY_ENGINES

DEFAULT_PROTOCOL = "md17-stability-cpu"


def add_parser(benches: Any) -> None:
    parser = benches.add_parser(
        "collapse",
        help="why MD collapses: the bond, the frames before it, DFT vs the model on them (hole or chemistry)",
    )
    parser.add_argument("potentials", nargs="+", metavar="NAME_OR_FILE", help="potential files or shipped names")
    parser.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        help=f"a shipped MD protocol's name or a YAML file (default {DEFAULT_PROTOCOL})",
    )
    parser.add_argument(
        "--frames-before", type=int, default=3, help="stable frames kept and labelled before a collapse"
    )
    parser.add_argument(
        "--dft",
        default="pbe/def2-svp",
        help="DFT method of the labels (pbe/def2-svp, gfn2-xtb) or none (default pbe/def2-svp)",
    )
    parser.add_argument(
        "--dft-frames", type=int, default=None, help="label only the last N stable frames (default: --frames-before)"
    )
    parser.add_argument(
        "--dft-collapse-frame", action="store_true", help="label the collapse frame too (it counts in the verdict)"
    )
    parser.add_argument(
        "--dft-cached", action="store_true", help="compute no DFT: use the labels already in the output folder"
    )
    parser.add_argument("--dft-workers", type=int, default=1, help="DFT processes at once, one thread each")
    parser.add_argument("--time", default=None, help="override the protocol's length, e.g. 30ps")
    parser.add_argument(
        "--recorded",
        default=None,
        metavar="DIR",
        help="an earlier stability run (DIR/<molecule>/summary.json): stop the MD 1 ps after its latest "
        "collapse (unless --time is given) and compare the collapse times",
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="with --recorded: read its saved trajectories (DIR/<molecule>/replica_<k>.h5) instead of running "
        "the MD again (same potential file and settings; collapses located to its saving interval)",
    )
    parser.add_argument(
        "--structure", action="append", default=None, help="start structures (default: the potential's)"
    )
    parser.add_argument("--md-dir", default=None, help="keep each MD run here (DIR/<molecule>), resumable")
    parser.add_argument(
        "--engine",
        choices=STABILITY_ENGINES,
        default="torch",
        help="the batched MD engine (torch-compiled: the same MD, faster; see bench stability)",
    )
    parser.add_argument("--out", default="collapse", help="output folder (per molecule, collapse.json, collapse.md)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.bench.collapse import (
        analyse_collapses,
        format_collapse_table,
        recorded_collapse_times,
        stop_time,
        write_summary,
    )
    from mlff.dynamics import load_protocol
    from mlff.resources import potential_path, protocol_path

    dft = None if args.dft.lower() == "none" else args.dft
    if args.replay and not args.recorded:
        raise SystemExit("mlff bench collapse: --replay needs --recorded DIR (the run to replay)")
    results = []
    for name in args.potentials:
        path = potential_path(name)
        recorded = None
        overrides: dict[str, Any] = {}
        if args.recorded:
            summary = Path(args.recorded) / path.stem / "summary.json"
            if not summary.is_file():
                raise FileNotFoundError(f"--recorded: no {summary}")
            recorded = recorded_collapse_times(summary)
            if args.time is None and stop_time(recorded):
                overrides["time"] = stop_time(recorded)
        if args.time:
            overrides["time"] = args.time
        settings = load_protocol(protocol_path(args.protocol), **overrides)
        results.append(
            analyse_collapses(
                path,
                settings,
                args.out,
                frames_before=args.frames_before,
                dft=dft,
                structure=args.structure,
                md_dir=Path(args.md_dir) / path.stem if args.md_dir else None,
                recorded=recorded,
                dft_workers=args.dft_workers,
                dft_frames=args.dft_frames,
                label_collapse_frame=args.dft_collapse_frame,
                dft_compute=not args.dft_cached,
                engine=args.engine,
                replay=Path(args.recorded) / path.stem if args.replay else None,
            )
        )
    json_path, md_path = write_summary(args.out)
    print(format_collapse_table(results))
    print(f"wrote {json_path} and {md_path}")
    return 0
