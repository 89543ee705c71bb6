"""`mlff md POTENTIAL [--structure FILE|DATASET:INDEX] [--engine torch|openmm|ase] ...`: MD with stability and speed."""

import argparse

from mlff.dynamics.engines import ENGINES
from mlff.utils import DTYPE_NAMES

SETTINGS = ("steps", "timestep_fs", "temperature_k", "thermostat", "friction_per_fs", "ttime", "seed", "save_every")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("md", help="run MD with a potential; print stability and speed")
    parser.add_argument("potential", help="a shipped potential's name (e.g. ethanol) or a potential file (.pt)")
    parser.add_argument(
        "--structure",
        action="append",
        default=None,
        help="FILE or DATASET:INDEX; repeat for a batch of molecules (replica k takes the k-th, cycling); "
        "default: the potential's start frames",
    )
    parser.add_argument(
        "--protocol",
        default=None,
        help="MD protocol: a shipped one by name (quick-500k, md17-stability-cpu, md17-stability) or a YAML file; "
        "the options below override it",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="integration steps (default 1000)")
    length.add_argument("--time", default=None, help="simulated length instead of steps, e.g. 300ps, 50ps, 500fs")
    parser.add_argument("--timestep-fs", type=float, default=None, help="time step in fs (default 0.5)")
    parser.add_argument("--temperature-k", type=float, default=None, help="temperature in K (default 300)")
    parser.add_argument(
        "--thermostat", choices=["nve", "langevin", "nose-hoover"], default=None, help="default langevin"
    )
    parser.add_argument("--friction-per-fs", type=float, default=None, help="Langevin friction, 1/fs (default 0.01)")
    parser.add_argument("--ttime", type=float, default=None, help="Nose-Hoover time constant in steps (default 20)")
    parser.add_argument("--save-every", type=int, default=None, help="steps between saved frames (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="replica k is seeded seed + k (default 0)")
    parser.add_argument("--replicas", type=int, default=None, help="independent replicas (default 1)")
    parser.add_argument(
        "--engine", choices=sorted(ENGINES), default="torch", help="torch (default; batched), OpenMM or ASE"
    )
    parser.add_argument(
        "--reference-data", default=None, help="dataset whose bonds, h(r) and start frames replace the potential's"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="default: the file's dtype")
    parser.add_argument(
        "-o", "--output-dir", default=None, help="write trajectories (HDF5), thermo.csv, checkpoint, summary, plots"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its checkpoint")
    select = parser.add_argument_group(
        "selection for labelling (active learning; docs/learn.md): frames of high committee spread, large bond "
        "deviation, or just before a collapse"
    )
    select.add_argument("--select", default=None, metavar="OUT.extxyz", help="write the candidate frames here")
    select.add_argument(
        "--spread-threshold",
        type=float,
        default=None,
        help="eV/A; default: the committee file's (99th percentile over its training frames); no committee: off",
    )
    select.add_argument(
        "--spread-ceiling",
        type=float,
        default=None,
        metavar="FACTOR",
        help="skip frames whose spread reaches FACTOR x the threshold (DP-GEN's upper trust level; default off)",
    )
    select.add_argument("--bond-deviation", type=float, default=0.3, help="A (default 0.3)")
    select.add_argument("--max-candidates", type=int, default=50, help="cap on the frames kept (default 50)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace):
    """MDSettings from --protocol and the options that override it."""
    from mlff.dynamics import load_protocol
    from mlff.dynamics.settings import settings_from
    from mlff.resources import protocol_path

    overrides = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if args.replicas is not None:
        overrides["replicas"] = args.replicas
    if args.time is not None:
        overrides["time"] = args.time
    return load_protocol(protocol_path(args.protocol), **overrides) if args.protocol else settings_from(overrides)


def run(args: argparse.Namespace) -> int:
    from mlff.dynamics import MDInterrupted, run_md
    from mlff.resources import potential_path

    settings = settings_from_args(args)
    potential = potential_path(args.potential)
    observers = run_observers(args, potential, settings)
    try:
        summary = run_md(
            potential,
            args.structure,
            settings,
            args.output_dir,
            args.device,
            args.dtype,
            engine=args.engine,
            reference_data=args.reference_data,
            resume=args.resume,
            progress=not args.no_progress,
            observers=observers,
        )
    except MDInterrupted as interrupted:
        summary = interrupted.summary
        print(f"interrupted at step {summary['throughput']['steps']}: everything saved so far is kept", end="")
        print(f"; continue with --resume -o {args.output_dir}" if args.output_dir else "")
        print_summary(summary)
        return 130
    print_summary(summary)
    return 1 if summary["stability"]["collapsed"] else 0


def run_observers(args: argparse.Namespace, potential, settings) -> list:
    """The committee spread log (committee files) and, with --select, the selection observer."""
    from mlff.dynamics.observers import SpreadObserver
    from mlff.dynamics.selection import SelectionObserver
    from mlff.export.load import read_metadata

    observers = [SpreadObserver()] if read_metadata(potential).get("committee") else []
    if args.select:
        options = {
            "output": args.select,
            "bond_deviation_a": args.bond_deviation,
            "collapse_deviation_a": settings.max_bond_deviation_a,
            "max_candidates": args.max_candidates,
            "spread_ceiling_factor": args.spread_ceiling,
        }
        if args.spread_threshold is not None:
            options["spread_threshold_ev_per_a"] = args.spread_threshold
        observers.append(
            SelectionObserver.for_potential(
                potential, args.structure, settings.replicas, args.reference_data, **options
            )
        )
    return observers


def print_summary(summary: dict) -> None:
    """The run's stability, temperature and speed in a few lines."""
    settings, stability, speed = summary["settings"], summary["stability"], summary["throughput"]
    print(
        f"MD ({summary['engine']} engine, {stability['replicas']} replica(s)): atoms {summary['atoms'][0]}"
        f"{'' if len(set(summary['atoms'])) == 1 else ' ...'}, {speed['steps']} steps of {settings['timestep_fs']} fs, "
        f"{settings['thermostat']} at {settings['temperature_k']} K"
    )
    state = "COLLAPSED" if stability["collapsed"] else "stable"
    if stability["collapsed_replicas"]:
        state += f" (replicas {stability['collapsed_replicas']})"
    hr = f"; h(r) MAE {stability['hr_mae']:.3f}" if stability["hr_mae"] is not None else ""
    print(
        f"stability: {state}; stable for {stability['stable_time_ps']:.3f} ps (min) / "
        f"{stability['stable_time_ps_mean']:.3f} ps (mean); largest bond deviation "
        f"{stability['largest_bond_deviation_a']:.3f} A over {stability['bonds']} bonds{hr}"
    )
    thermo = ""
    if stability["mean_temperature_k"] is not None:
        thermo = f"mean temperature {stability['mean_temperature_k']:.1f} K"
    if settings["thermostat"] == "nve":
        thermo += f"; total-energy drift {stability['energy_drift_mev_per_ps_atom']:.3f} meV/ps/atom"
    if thermo:
        print(thermo)
    share = speed["potential_time_fraction"]
    share_text = f", {100 * share:.0f}% in the potential" if share is not None else ""
    spread = summary.get("observers", {}).get("force_spread")
    if spread and spread["largest_ev_per_a"] is not None:
        print(
            f"committee force spread: largest {spread['largest_ev_per_a']:.3f} eV/A, median of the saved frames' "
            f"largest {spread['median_of_frame_largest_ev_per_a']:.3f} eV/A"
        )
    selection = summary.get("observers", {}).get("selection")
    if selection:
        found = f"{selection['candidates']} candidate frames {selection['by_reason']}"
        print(f"selection: {found} -> {selection['output']}")
    print(
        f"speed: {speed['steps_per_second']:.1f} steps/s, {speed['ns_per_day']:.3f} ns/day (all replicas), "
        f"{speed['atom_steps_per_second']:.0f} atom-steps/s{share_text}"
    )
