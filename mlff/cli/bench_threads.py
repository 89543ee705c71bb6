"""`mlff bench threads POTENTIAL [--replicas 1,2,5,...]`: calls at 1 vs 2 threads by system size, JSON."""

import argparse
from typing import Any


def add_parser(benches: Any) -> None:
    parser = benches.add_parser("threads", help="energy+force ms per call at 1 vs 2 threads, by system size")
    parser.add_argument("potential", help="potential file or shipped name")
    parser.add_argument("--replicas", default="1,2,5,10,20,40,80,160", help="batch sizes, comma-separated")
    parser.add_argument("--threads", dest="counts", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, thread counts taking turns (median reported)")
    parser.add_argument("-o", "--output", default="bench_threads.json", help="JSON output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.bench.threads import thread_benchmark
    from mlff.utils import format_table, write_json

    replicas = [int(text) for text in args.replicas.split(",")]
    counts = tuple(int(text) for text in args.counts.split(","))
    rows = thread_benchmark(args.potential, replicas, counts, args.rounds)
    write_json(args.output, rows)
    print(format_table([list(row.values()) for row in rows], list(rows[0]), floatfmt=".2f"))
    print(f"wrote {args.output}")
    return 0
