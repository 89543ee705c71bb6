"""`mlff inspect MODEL [MODEL ...]`: the embedding metrics and plots of the learned distance encodings.

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
from pathlib import Path
from typing import Any

# Repeated from mlff.inspect.embeddings so that building the parser imports no torch.
DEFAULT_POINTS = 1000


def add_parser(subparsers: Any) -> None:
    """Register the `inspect` subcommand."""
    parser = subparsers.add_parser(
        "inspect",
        help="embedding metrics and plots of the distance encodings of models",
        description="Sample each distance encoding of potential files or checkpoints at evenly spaced distances "
        "(spline: its [r_min, r_max]; other encodings: [0.5 A, cutoff]) and report Gao et al.'s metrics "
        "(non-linearity, non-monotonicity, diversity, smoothness) with plots; several models also get their "
        "pairwise similarity matrix. Tables print here and are saved as JSON with the PNGs.",
    )
    parser.add_argument(
        "models",
        nargs="+",
        type=Path,
        metavar="MODEL",
        help="potential file, shipped potential's name or training checkpoint",
    )
    parser.add_argument(
        "-o", "--output-dir", type=Path, default=None, help="output folder (default: runs/inspect/<model label(s)>)"
    )
    parser.add_argument(
        "--points", type=int, default=DEFAULT_POINTS, help=f"distances sampled per encoding (default: {DEFAULT_POINTS})"
    )
    parser.add_argument(
        "--weights", choices=("ema", "raw"), default="ema", help="checkpoint weights to use (default: ema)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Inspect the models, print the tables, say what was written."""
    if args.points < 2:
        raise ValueError(f"--points must be >= 2, got {args.points}")
    from mlff.inspect.report import default_output_dir, format_metrics, format_similarity, inspect_files

    output_dir = args.output_dir if args.output_dir is not None else default_output_dir(args.models)
    report = inspect_files(args.models, output_dir, n_points=args.points, weights=args.weights)
    print(format_metrics(report))
    if report["similarity"] is not None:
        print()
        print(format_similarity(report["similarity"]))
    print()
    print(f"wrote {len(report['files'])} files to {output_dir}: " + ", ".join(Path(f).name for f in report["files"]))
    return 0
