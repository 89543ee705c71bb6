"""`mlff info NAME_OR_FILE [--json]`: print a potential's metadata (a file or a shipped potential's name).

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `info` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="show a potential file's metadata",
        description="Print the metadata of a potential file (species, cutoff, model, training data, test metrics).",
    )
    parser.add_argument(
        "potential", type=Path, help="potential file (.pt) or a shipped potential's name (ethanol, ...)"
    )
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the metadata, readable or as JSON."""
    from mlff.export.load import describe_metadata, read_metadata, resolve_potential
    from mlff.utils import to_json

    path = resolve_potential(args.potential)
    metadata = read_metadata(path)
    if args.json:
        print(to_json(metadata))
    else:
        print(path)
        print(describe_metadata(metadata))
    return 0
