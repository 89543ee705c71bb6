"""The `mlff` command: a thin layer over library functions.

Each subcommand lives in its own module of this package with two functions,
`add_parser(subparsers)` and `run(args) -> int`; adding one is one line in
`COMMANDS`.
"""

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from mlff._version import __version__

COMMANDS: dict[str, str] = {
    "train": "mlff.cli.train",
    "eval": "mlff.cli.evaluate",
    "export": "mlff.cli.export",
    "info": "mlff.cli.info",
    "md": "mlff.cli.md",
    "bench": "mlff.cli.bench",
    "data": "mlff.cli.data",
    "inspect": "mlff.cli.inspect",
    "learn": "mlff.cli.learn",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlff", description="Machine-learned molecular force fields.")
    parser.add_argument("--version", action="version", version=f"mlff {__version__}")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for this command (default: OMP_NUM_THREADS if set, else 1 for small systems; "
        "see mlff.threads)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `mlff train CONFIG --resume key=value`: argparse ends a positional list at the first flag, so
    # dotted overrides after one arrive here; they join the command's overrides in their order.
    if extra and isinstance(getattr(args, "overrides", None), list) and all(_is_override(item) for item in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        from mlff.threads import set_user_threads

        set_user_threads(args.threads)
    from mlff.memory import keep_freed_memory

    keep_freed_memory()
    # `kill` and batch schedulers stop a job with SIGTERM: taken as Ctrl-C, so an MD run closes its
    # HDF5 trajectories (an HDF5 file killed mid-write can be left unreadable) and reports where it stopped.
    previous = (
        signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"mlff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Commands that can say more (mlff md, mlff learn) catch it themselves.
        print(f"mlff {args.command}: interrupted; files written so far are kept", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: raise KeyboardInterrupt, as Ctrl-C does."""
    raise KeyboardInterrupt(f"signal {signum}")


def _is_override(item: str) -> bool:
    """A dotted `key=value` override (not a flag)."""
    return "=" in item and not item.startswith("-")


if __name__ == "__main__":
    sys.exit(main())
