"""`mlff md POTENTIAL [--structure FILE|DATASET:INDEX] ...`: MD with stability and speed."""

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("md", help="run MD with a potential; print stability and speed")
    parser.add_argument("potential", help="potential file (.pt)")
    parser.add_argument(
        "--structure", default=None, help="FILE or DATASET:INDEX (default: the potential's start frame)"
    )
    parser.add_argument("--protocol", default=None, help="MD protocol YAML (md/*.yaml); the options below override it")
    parser.add_argument("--steps", type=int, default=None, help="integration steps (default 1000)")
    parser.add_argument("--timestep-fs", type=float, default=None, help="time step in fs (default 0.5)")
    parser.add_argument("--temperature-k", type=float, default=None, help="temperature in K (default 300)")
    parser.add_argument(
        "--thermostat", choices=["nve", "langevin", "nose-hoover"], default=None, help="default langevin"
    )
    parser.add_argument("--friction-per-fs", type=float, default=None, help="Langevin friction, 1/fs (default 0.01)")
    parser.add_argument("--ttime", type=float, default=None, help="Nose-Hoover time constant in steps (default 20)")
    parser.add_argument("--save-every", type=int, default=None, help="steps between saved frames (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="velocity and noise seed (default 0)")
    parser.add_argument(
        "--engine", choices=["ase", "torch"], default="ase", help="ASE integrators or the batched torch engine"
    )
    parser.add_argument("--replicas", type=int, default=1, help="independent replicas (torch engine; default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument(
        "-o", "--output-dir", default=None, help="write thermo.csv, summary.json and (ASE engine) trajectory.traj"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlff.dynamics import MDSettings, load_protocol, run_md

    names = ("steps", "timestep_fs", "temperature_k", "thermostat", "friction_per_fs", "ttime", "seed", "save_every")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    settings = load_protocol(args.protocol, **overrides) if args.protocol else MDSettings(**overrides)
    summary = run_md(
        args.potential,
        args.structure,
        settings,
        args.output_dir,
        args.device,
        args.dtype,
        engine=args.engine,
        replicas=args.replicas,
    )
    stability, speed = summary["stability"], summary["throughput"]
    print(
        f"MD ({args.engine} engine, {args.replicas} replica(s)): {summary['atoms']} atoms, {speed['steps']} steps "
        f"of {settings.timestep_fs} fs, {settings.thermostat} at {settings.temperature_k} K"
    )
    state = "COLLAPSED" if stability["collapsed"] else "stable"
    if stability.get("collapsed_replicas"):
        state += f" (replicas {stability['collapsed_replicas']})"
    print(
        f"stability: {state}; stable for {stability['stable_time_ps']:.3f} ps; "
        f"largest bond deviation {stability['largest_bond_deviation_a']:.3f} A over {stability['bonds']} bonds"
    )
    thermo = f"final temperature: {speed['final_temperature_k']:.1f} K"
    if settings.thermostat == "nve":
        thermo += f"; total-energy drift: {speed['energy_drift_mev_per_ps_atom']:.3f} meV/ps/atom"
    print(thermo)
    share = 100 * speed["potential_time_fraction"]
    print(
        f"speed: {speed['steps_per_second']:.1f} steps/s, {speed['ns_per_day']:.3f} ns/day, "
        f"{speed['atom_steps_per_second']:.0f} atom-steps/s, {share:.0f}% in the potential"
    )
    return 1 if stability["collapsed"] else 0
