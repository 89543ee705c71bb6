"""`mlff info POTENTIAL.pt [--json]`: print a potential file's metadata.

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `info` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="show a potential file's metadata",
        description="Print the metadata of a potential file (species, cutoff, model, training data, test metrics).",
    )
    parser.add_argument("potential", type=Path, help="potential file (.pt)")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the metadata, readable or as JSON."""
    from mlff.export.load import describe_metadata, read_metadata

    metadata = read_metadata(args.potential)
    if args.json:
        print(json.dumps(metadata, indent=2))
    else:
        print(args.potential)
        print(describe_metadata(metadata))
    return 0
