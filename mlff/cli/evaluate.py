"""`mlff eval MODEL DATA`: energy and force errors of a potential file or a training checkpoint.

The split is the one the model was trained with when the file records it
(config["data"] of a checkpoint, metadata["training"]["config"]["data"] of a
potential): the same seed and sizes give the same test frames.

Library imports happen inside functions: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlff.data import Frames, make_split, read_frames

if TYPE_CHECKING:
    from mlff.evaluate import PotentialCallable

SPLITS = ("test", "val", "train", "all")
# Keys of a training config's "data" section -> make_split keyword arguments.
SPLIT_SETTINGS: dict[str, str] = {
    "split": "split_index",
    "n_val": "n_val",
    "n_train": "n_train",
    "n_test": "n_test",
    "seed": "seed",
    "train_pool": "train_pool",
}


def add_parser(subparsers: Any) -> None:
    """Register the `eval` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="energy and force errors of a potential or checkpoint on a dataset",
        description="Evaluate a potential file or a training checkpoint on labelled frames.",
    )
    parser.add_argument("model", type=Path, help="potential file or training checkpoint (.pt)")
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
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def evaluate_file(
    model_path: str | Path,
    data_path: str | Path,
    split: str = "test",
    split_index: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    weights: str = "ema",
) -> dict[str, Any]:
    """Errors of a potential file or checkpoint on one split of a dataset.

    Args:
        model_path: a potential file or a training checkpoint.
        data_path: a dataset `read_frames` reads.
        split: "test", "val", "train" or "all".
        split_index: overrides the recorded split index (None: the recorded one, else 0).
        batch_size: structures per call.
        device: torch device.
        weights: "ema" or "raw" (checkpoints only).

    Returns:
        The metrics of `mlff.evaluate.evaluate` (meV, meV/A) plus model, kind,
        data, split and split_settings.
    """
    import torch

    from mlff.data.batch import FrameTensors
    from mlff.evaluate import evaluate

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model, kind, data_config = load_evaluation_model(model_path, device, weights)
    settings = split_settings(data_config)
    if split_index is not None:
        settings["split_index"] = split_index
    frames = read_frames(data_path)
    indices = select_frames(frames, split, settings)
    metrics = evaluate(model, FrameTensors(frames, torch.float64, device), indices, batch_size)
    return {
        "model": str(model_path),
        "kind": kind,
        "data": str(data_path),
        "split": split,
        "split_settings": settings,
        **metrics,
    }


def load_evaluation_model(
    path: str | Path, device: str, weights: str = "ema"
) -> tuple["PotentialCallable", str, dict[str, Any]]:
    """A v1 callable from a potential file or, failing that, a training checkpoint.

    Returns:
        (callable, "potential" or "checkpoint", the training config's "data" section or {}).
    """
    from mlff.checkpoint import load_checkpoint, model_from_checkpoint
    from mlff.export.load import PotentialError, load_potential

    path = Path(path)
    try:
        potential = load_potential(path, device=device)
    except PotentialError as potential_error:
        if not path.is_file():
            raise
        try:
            checkpoint = load_checkpoint(path)
        except ValueError as checkpoint_error:
            raise ValueError(
                f"{path} is neither a potential file nor a training checkpoint; as a potential: "
                f"{potential_error}; as a checkpoint: {checkpoint_error}"
            ) from None
        model = model_from_checkpoint(checkpoint, weights).to(device).eval()
        return model, "checkpoint", checkpoint["config"].get("data") or {}
    training = potential.metadata.get("training") or {}
    return potential, "potential", (training.get("config") or {}).get("data") or {}


def split_settings(data_config: dict[str, Any]) -> dict[str, Any]:
    """make_split keyword arguments from a training config's "data" section (unknown keys ignored)."""
    return {SPLIT_SETTINGS[key]: value for key, value in data_config.items() if key in SPLIT_SETTINGS}


def select_frames(frames: Frames, split: str, settings: dict[str, Any]) -> np.ndarray:
    """Frame indices of `split` ("all" or a part of make_split(frames, **settings))."""
    if split == "all":
        return np.arange(frames.num_frames)
    return getattr(make_split(frames, **settings), split)


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
