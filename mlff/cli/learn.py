"""`mlff learn CONFIG.yaml [key=value ...] [--resume]`."""

import argparse
import shlex


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn", help="active learning: train a committee, run MD, label the frames it is unsure of, repeat"
    )
    parser.add_argument("config", help="mlff learn YAML config (docs/learn.md)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. budget.max_iterations=5 md.time=20ps")
    parser.add_argument("--resume", action="store_true", help="continue OUTPUT_DIR at the step where it stopped")
    parser.add_argument("--progress", action="store_true", help="progress bars for training and MD")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.learn import learn, load_learn_config

    config = load_learn_config(args.config, args.overrides)
    command = shlex.join(["mlff", "learn", args.config, *args.overrides])
    try:
        summary = learn(config, resume=args.resume, progress=args.progress, report=print, command=command)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, or an MD step's MDInterrupted
        print(f"interrupted: everything saved so far in {config.output_dir} is kept; continue with: {command} --resume")
        return 130
    for row in summary["iterations"]:
        print(
            f"iteration {row['index']}: stable time {row['stable_time_ps']} ps "
            f"(collapsed {row['collapsed_replicas']}), largest spread {row['largest_spread_ev_per_a']} eV/A, "
            f"labelled {row['labelled'] or 0}"
        )
    print(f"{summary['finished']}; {summary['frames_labelled']} frames labelled; see {config.output_dir}/summary.json")
    return 0
