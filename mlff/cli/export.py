"""`mlff export CHECKPOINT -o POTENTIAL.pt`: a training checkpoint -> a standalone potential file.

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register the `export` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="turn a training checkpoint into a potential file",
        description="Write a training checkpoint as a TorchScript potential file with metadata; "
        "the file runs with torch.jit.load alone.",
    )
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (.pt)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="potential file to write (.pt)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw weights (default: ema)")
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="network dtype of the file (default: float64)",
    )
    parser.add_argument("--no-card", action="store_true", help="do not write the model card (OUTPUT with .yaml)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export the checkpoint and print what was written."""
    from ase.data import chemical_symbols

    from mlff.export.card import write_model_card
    from mlff.export.deploy import export_checkpoint
    from mlff.export.load import read_metadata

    path = export_checkpoint(args.checkpoint, args.output, weights=args.weights, dtype=args.dtype)
    metadata = read_metadata(path)
    training = metadata.get("training") or {}
    species = " ".join(chemical_symbols[z] for z in metadata["species"])
    size_kib = path.stat().st_size / 1024
    print(
        f"wrote {path} ({size_kib:.0f} KiB): species {species}, cutoff {metadata['cutoff']} A, "
        f"{metadata['dtype']}, {training.get('weights')} weights of epoch {training.get('epoch')}"
    )
    if not args.no_card:
        print(f"wrote model card {write_model_card(path)}")
    return 0
