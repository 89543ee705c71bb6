"""`mlff train CONFIG.yaml [key=value ...] [--resume] [--distributed]`.

Under torchrun (`torchrun --nproc-per-node N -m mlff.cli.main train CONFIG`) every process is one
rank of a data-parallel run (`mlff.training.distributed`); a launch of more than one process
implies --distributed. Rank 0 alone prints.
"""

import argparse
import json
import os


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=50 data.path=my.npz")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes of a torchrun launch (gloo on CPU, NCCL on CUDA; docs/scale.md); "
        "implied when torchrun starts more than one process",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.training import load_config, train

    config = load_config(args.config, args.overrides)
    command = " ".join(["mlff", "train", args.config, *args.overrides])
    distributed = args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1
    result = train(config, resume=args.resume, progress=not args.no_progress, command=command, distributed=distributed)
    if distributed and int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"stopped: {result.stopped_because}; epochs: {result.epochs_run}")
    print(f"best validation force MAE: {result.best_val_force_mae:.3f} meV/A")
    print("test:", json.dumps({k: round(v, 4) for k, v in result.test_metrics.items()}))
    if config.train.committee > 1:
        members = ", ".join(f"{result.output_dir}/member_{k}/best.pt" for k in range(config.train.committee))
        print(f"committee of {config.train.committee} (means over members above): {members}")
        print(f"export it: mlff export {result.output_dir} -o POTENTIAL.pt")
    else:
        print(f"checkpoints: {result.output_dir}/best.pt, {result.output_dir}/last.pt")
    return 0
