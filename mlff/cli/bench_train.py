"""`mlff bench train CONFIG... [--data FILE]`: frames/s and the breakdown of the training step, JSON."""

import argparse
from typing import Any


def add_parser(benches: Any) -> None:
    parser = benches.add_parser("train", help="frames/s and ms/step of the training step of configs, with a breakdown")
    parser.add_argument("configs", nargs="+", help="training config files (YAML)")
    parser.add_argument("--data", default=None, help="data file for every config (default: the first config's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every config")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, configs taking turns (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("-o", "--output", default="bench_train.json", help="JSON output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.bench.train import PHASES, TrainBenchSettings, train_benchmark
    from mlff.utils import format_table, write_json

    settings = TrainBenchSettings(steps=args.steps, rounds=args.rounds, warmup=args.warmup)
    rows = train_benchmark(args.configs, settings, args.data, args.set)
    write_json(args.output, rows)
    headers = ["config", "params", "batch", "frames/s", "ms/step", "CPU ms/step", *PHASES]
    table = [
        [r["config"], r["parameters"], r["batch_size"], r["frames_per_s"], r["ms_per_step"], r["cpu_ms_per_step"]]
        + [r["breakdown_ms"][p] for p in PHASES]
        for r in rows
    ]
    print(format_table(table, headers, floatfmt=".1f"))
    print(f"wrote {args.output}")
    return 0
