"""`mlff eval MODEL DATA`: energy and force errors of a potential (a file or a shipped name) or a training checkpoint.

Library imports happen inside functions: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
from pathlib import Path
from typing import Any

# Repeated from mlff.evaluate so that building the parser imports no torch.
SPLITS = ("test", "val", "train", "all")


def add_parser(subparsers: Any) -> None:
    """Register the `eval` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="energy and force errors of a potential or checkpoint on a dataset",
        description="Evaluate a potential file or a training checkpoint on labelled frames.",
    )
    parser.add_argument(
        "model", type=Path, help="potential file, shipped potential's name or training checkpoint (.pt)"
    )
    parser.add_argument("data", type=Path, help="dataset (MD17/rMD17 .npz, or extxyz with energies and forces)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="frames to evaluate (default: test)")
    parser.add_argument("--split-index", type=int, default=None, help="k of the file's split_train[k]/split_test[k]")
    parser.add_argument("--batch-size", type=int, default=64, help="structures per call (default: 64)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--weights", choices=("ema", "raw"), default="ema", help="checkpoint weights to use (default: ema)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the errors, optionally write them as JSON."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    from mlff.evaluate import evaluate_file
    from mlff.utils import write_json

    result = evaluate_file(
        args.model,
        args.data,
        split=args.split,
        split_index=args.split_index,
        batch_size=args.batch_size,
        device=args.device,
        weights=args.weights,
    )
    print(format_result(result))
    if args.json is not None:
        write_json(args.json, result)
    return 0


def format_result(result: dict[str, Any]) -> str:
    """Readable lines of an evaluate_file result."""
    index = result["split_settings"].get("split_index", 0)
    where = "all frames" if result["split"] == "all" else f"split {result['split']} (index {index})"
    return "\n".join(
        [
            f"model   {result['model']} ({result['kind']})",
            f"data    {result['data']}, {where}: {result['frames']} frames",
            f"energy  MAE {result['energy_mae_mev']:.3f} meV   RMSE {result['energy_rmse_mev']:.3f} meV   "
            f"MAE/atom {result['energy_mae_mev_per_atom']:.3f} meV",
            f"forces  MAE {result['force_mae_mev_per_a']:.3f} meV/A   RMSE {result['force_rmse_mev_per_a']:.3f} meV/A",
        ]
    )
