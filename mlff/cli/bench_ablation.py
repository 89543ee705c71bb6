"""`mlff bench ablation --backbone B --molecules M... --seeds N --epochs E`: the paper's Table 1 ablation."""

import argparse
import sys
from typing import Any


def add_parser(benches: Any) -> None:
    """Add `ablation` to the `mlff bench` subcommands (`benches`: their subparsers object)."""
    parser = benches.add_parser(
        "ablation",
        help="train one backbone with six distance treatments (raw, mlp, gaussian, bessel, spline, spline+smoothness)",
        description=(
            "Train one backbone on MD17 molecules with six distance treatments, the same epochs and seeds per cell, "
            "and print the test force MAE table beside Gao et al. 2022, Table 1. Cells are resumable: rerun the "
            "same command to finish an interrupted ablation."
        ),
    )
    parser.add_argument("--backbone", required=True, choices=["egnn", "transformer", "et"])
    parser.add_argument("--molecules", required=True, nargs="+", metavar="MOLECULE", help="e.g. ethanol malonaldehyde")
    parser.add_argument("--seeds", required=True, type=int, metavar="N", help="training seeds 0..N-1 per cell")
    parser.add_argument("--epochs", required=True, type=int, metavar="E", help="epochs of every cell")
    parser.add_argument(
        "--labels", choices=["md17", "rmd17"], default="md17", help="md17: the paper's original labels (default)"
    )
    parser.add_argument("--output-dir", default="runs/ablation", help="cells go to OUTPUT_DIR/LABELS/BACKBONE/...")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of LABELS_MOLECULE.npz files with published splits (default: the `mlff data fetch` cache, "
        "$MLFF_CACHE_DIR or ~/.cache/mlff/datasets)",
    )
    parser.add_argument(
        "--max-minutes-per-cell",
        type=float,
        default=0.0,
        help="wall-clock cap per cell (0: none); a cell it stops early is flagged in the table",
    )
    parser.add_argument(
        "--threads",
        dest="ablation_threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override for every cell, e.g. train.device=cuda (repeatable; recorded in ablation.json)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar per cell")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from mlff.bench.ablation import AblationSettings, format_table, run_ablation
    from mlff.threads import set_user_threads

    if args.ablation_threads is not None:
        set_user_threads(args.ablation_threads)
    data_dir = {} if args.data_dir is None else {"data_dir": args.data_dir}
    settings = AblationSettings(
        backbone=args.backbone,
        molecules=tuple(args.molecules),
        seeds=args.seeds,
        epochs=args.epochs,
        labels=args.labels,
        output_dir=args.output_dir,
        max_minutes_per_cell=args.max_minutes_per_cell,
        overrides=tuple(args.override),
        **data_dir,
    )
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        report = run_ablation(settings, progress=progress, log=print, threads=torch.get_num_threads())
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    print()
    print(format_table(report), end="")
    print(f"wrote {settings.root / 'ablation.json'} and {settings.root / 'table.md'}")
    return 0
