"""`mlff data fetch md17|rmd17 MOLECULE [--cache DIR] [--source URL_PREFIX]`: download, verify, convert.

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `data` command and its `fetch` subcommand."""
    parser = subparsers.add_parser(
        "data",
        help="download benchmark datasets",
        description="Dataset tools. `mlff data fetch DATASET MOLECULE` downloads MD17 or rMD17 into a cache, "
        "checks its SHA-256 and converts it to the MD17 layout that `mlff train` reads.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True
    fetch = actions.add_parser(
        "fetch",
        help="download, verify and convert one molecule of MD17 or rMD17",
        description="Download one molecule of MD17 (sGDML site) or rMD17 (figshare archive with the five "
        "published splits), verify its SHA-256 (pinned, or recorded at first download and checked on every "
        "later use) and write <cache>/<dataset>_<molecule>.npz (z, R, E, F in kcal/mol; mlff converts on load).",
    )
    fetch.add_argument("dataset", help="md17 or rmd17")
    fetch.add_argument("molecule", help="e.g. ethanol (an unknown name lists the known ones)")
    fetch.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="cache directory (default: $MLFF_CACHE_DIR or ~/.cache/mlff/datasets)",
    )
    fetch.add_argument(
        "--source",
        default=None,
        metavar="URL_PREFIX",
        help="fetch <URL_PREFIX>/<file name> instead of the official address (a mirror: http(s)://, file:// "
        "or a directory)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen `data` action."""
    from mlff.data.fetch import fetch_dataset

    path = fetch_dataset(args.dataset, args.molecule, cache_dir=args.cache, source=args.source, report=print)
    print(f"ready: {path}")
    return 0
