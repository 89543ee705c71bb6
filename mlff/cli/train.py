"""`mlff train CONFIG.yaml [key=value ...] [--resume]`."""

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config")
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=50 data.path=my.npz")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.training import load_config, train

    config = load_config(args.config, args.overrides)
    command = " ".join(["mlff", "train", args.config, *args.overrides])
    result = train(config, resume=args.resume, progress=not args.no_progress, command=command)
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
