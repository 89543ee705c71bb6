"""`mlff data fetch|generate|minimize|label`: benchmark datasets and labelled data of our own.

- `mlff data fetch md17|rmd17 MOLECULE [--cache DIR] [--source URL_PREFIX]`: download, verify, convert.
- `mlff data generate --method gfn2-xtb|gfn1-xtb|pbe/def2-svp [--g2] [--xyz FILES...] [--smiles S... | --smiles-file F]
  -o corpus.extxyz`: optimised conformers and Langevin MD frames with energies and forces
  (`mlff.data.generate` documents the extxyz contract).
- `mlff data minimize MOLECULE|DATASET [--frames 0 5 ...] -o minima.extxyz`: dataset frames optimised at
  PBE/def2-SVP (rMD17's level), written as equilibrium frames of the same contract.
- `mlff data label FRAMES -o labelled.extxyz --method gfn2-xtb|gfn1-xtb|pbe/def2-svp [--workers N]`: single-point
  energies and forces of given frames, appended as each finishes, resumable (`mlff.data.label`).
- `mlff data pack IN... -o OUT.h5`: dataset files into one chunked HDF5 corpus that training reads
  lazily (`mlff.data.packed`).

generate, minimize and label run on a Dask cluster with `--scheduler ADDRESS` (docs/scale.md).

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlff.methods import METHODS

if TYPE_CHECKING:
    from mlff.data.generate import GenerateConfig
    from mlff.data.molecules import MoleculeSpec


def add_parser(subparsers: Any) -> None:
    """Register the `data` command and its `fetch` subcommand."""
    parser = subparsers.add_parser(
        "data",
        help="download benchmark datasets, generate labelled data",
        description="Dataset tools. `mlff data fetch DATASET MOLECULE` downloads MD17 or rMD17 into a cache, "
        "checks its SHA-256 and converts it to the MD17 layout that `mlff train` reads; `mlff data generate` "
        "labels molecules (GFN2-xTB, GFN1-xTB or PBE/def2-SVP) into an extxyz corpus; `mlff data minimize` optimises "
        "dataset frames into minima of the PBE/def2-SVP surface; `mlff data label` computes given frames.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True
    fetch = actions.add_parser(
        "fetch",
        help="download, verify and convert one molecule of MD17 or rMD17",
        description="Download one molecule of MD17 (sGDML site) or rMD17 (figshare archive with the five "
        "published splits), verify its SHA-256 (pinned, or recorded at first download and checked on every "
        "later use) and write <cache>/<dataset>_<molecule>.npz (z, R, E, F in kcal/mol; mlff converts on load).",
    )
    fetch.add_argument("dataset", help="md17 or rmd17")
    fetch.add_argument("molecule", help="e.g. ethanol (an unknown name lists the known ones)")
    fetch.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="cache directory (default: $MLFF_CACHE_DIR or ~/.cache/mlff/datasets)",
    )
    fetch.add_argument(
        "--source",
        default=None,
        metavar="URL_PREFIX",
        help="fetch <URL_PREFIX>/<file name> instead of the official address (a mirror: http(s)://, file:// "
        "or a directory)",
    )
    _add_generate_parser(actions)
    _add_minimize_parser(actions)
    _add_label_parser(actions)
    _add_pack_parser(actions)
    parser.set_defaults(run=run)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by generate and minimize: method, optimisation, parallelism, output."""
    parser.add_argument("-o", "--output", type=Path, required=True, help="the extxyz file to write")
    parser.add_argument(
        "--basis",
        default=None,
        help="basis set overriding the pyscf method's (e.g. sto-3g for quick tests); not for the xTB methods",
    )
    parser.add_argument(
        "--fmax", type=float, default=1e-3, metavar="EV_PER_A", help="optimisation threshold (default 1e-3)"
    )
    parser.add_argument("--max-opt-steps", type=int, default=1000, help="BFGS steps, then as many FIRE steps")
    parser.add_argument("--workers", type=int, default=1, help="molecules computed at once (processes)")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="OpenMP/BLAS threads of each worker")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (conformers, MD)")
    _add_scheduler_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_scheduler_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the calculations on the Dask cluster of this scheduler (e.g. tcp://host:8786; needs mlff[scale] "
        "here and on the workers); results return here. Default: local processes (--workers)",
    )


def _add_pack_parser(actions: Any) -> None:
    pack = actions.add_parser(
        "pack",
        help="pack dataset files into one chunked HDF5 corpus that training reads lazily",
        description="Read each input (MD17/rMD17 npz, extxyz, another packed corpus; one at a time) and append its "
        "frames to OUT.h5 (eV, Angstrom; `mlff.data.packed`). Train from it with data.path=OUT.h5: its atoms are "
        "read a chunk at a time, so the corpus may be larger than memory.",
    )
    pack.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="dataset files, in order")
    pack.add_argument("-o", "--output", type=Path, required=True, help="the .h5 file to write")
    pack.add_argument("--energy-unit", default="auto", help="auto (npz: kcal/mol, extxyz: eV), kcal/mol or eV")
    pack.add_argument("--chunk-frames", type=int, default=1024, help="frames per chunk (default 1024)")


def _add_generate_parser(actions: Any) -> None:
    generate = actions.add_parser(
        "generate",
        help="label molecules: optimised conformers and Langevin MD frames with energies and forces",
        description="For each molecule: starting geometries (the input geometry, or RDKit ETKDG conformers of a "
        "SMILES) optimised on the method's surface (equilibrium frames), then Langevin MD at each temperature "
        "from the minima (off-equilibrium frames). Writes an extxyz corpus (info keys equilibrium, method, "
        "molecule, source, temperature_k), OUTPUT_STEM.summary.json with per-molecule counts and errors, and "
        "resumes from OUTPUT_STEM.parts/ when rerun. A failing molecule is reported and skipped.",
    )
    generate.add_argument("--method", choices=METHODS, default="gfn2-xtb", help="level of theory")
    generate.add_argument("--g2", action="store_true", help="the closed-shell H/C/N/O molecules of ASE's G2 set")
    generate.add_argument("--xyz", nargs="+", default=[], metavar="FILE", help="XYZ/SDF files (each structure)")
    smiles = generate.add_mutually_exclusive_group()
    smiles.add_argument("--smiles", nargs="+", default=[], metavar="SMILES", help="SMILES strings (needs rdkit)")
    smiles.add_argument("--smiles-file", type=Path, default=None, help="a file of 'SMILES [name]' lines")
    generate.add_argument("--conformers", type=int, default=3, help="ETKDG conformers per SMILES (default 3)")
    generate.add_argument(
        "--temperatures", type=float, nargs="+", default=[300.0, 500.0, 800.0], metavar="K", help="MD temperatures"
    )
    generate.add_argument("--md-frames", type=int, default=20, help="MD frames kept per temperature (default 20)")
    generate.add_argument("--timestep-fs", type=float, default=0.5, help="MD time step, fs (default 0.5)")
    generate.add_argument("--friction-per-fs", type=float, default=0.02, help="Langevin friction, 1/fs")
    generate.add_argument(
        "--equilibration-steps", type=int, default=200, help="MD steps discarded per temperature (default 200)"
    )
    generate.add_argument("--sample-every", type=int, default=20, help="MD steps between kept frames (default 20)")
    _add_run_options(generate)


def _add_minimize_parser(actions: Any) -> None:
    minimize = actions.add_parser(
        "minimize",
        help="optimise dataset frames into minima of the PBE/def2-SVP (rMD17) surface",
        description="Optimise frames of an MD17-layout dataset (a path, or an MD17 molecule name looked up as "
        "rMD17 in the fetch cache) at PBE/def2-SVP, keeping the dataset's atom order, and write them as "
        "equilibrium frames of the `mlff data generate` extxyz contract (plus info dataset_frame).",
    )
    minimize.add_argument("target", metavar="MOLECULE|DATASET", help="e.g. ethanol or path/to/rmd17_ethanol.npz")
    minimize.add_argument("--frames", type=int, nargs="+", default=[0], help="frame indices (default 0)")
    minimize.add_argument("--method", choices=METHODS, default="pbe/def2-svp", help="level of theory")
    minimize.add_argument("--cache", type=Path, default=None, metavar="DIR", help="fetch cache for MOLECULE names")
    _add_run_options(minimize)


def _add_label_parser(actions: Any) -> None:
    label = actions.add_parser(
        "label",
        help="single-point energies and forces of given frames (GFN2-xTB, GFN1-xTB or PBE/def2-SVP)",
        description="Compute energy and forces of each frame of FRAMES (any file ase.io reads, e.g. the "
        "candidates an MD selection wrote) and append each to OUTPUT (extxyz, the `mlff data generate` "
        "contract plus info frame_index and positions_sha256) as soon as it is done; a rerun skips the "
        "frames already in OUTPUT (same index and positions), so a killed run resumes.",
    )
    label.add_argument("frames", type=Path, help="the frames to label")
    label.add_argument("-o", "--output", type=Path, required=True, help="the extxyz file to append to")
    label.add_argument("--method", choices=METHODS, default="gfn2-xtb", help="level of theory")
    label.add_argument("--basis", default=None, help="basis set overriding the pyscf method's (e.g. sto-3g)")
    label.add_argument("--workers", type=int, default=1, help="frames computed at once (processes)")
    label.add_argument("--threads-per-worker", type=int, default=1, help="OpenMP/BLAS threads of each worker")
    label.add_argument("--quiet", action="store_true", help="no line per frame")
    _add_scheduler_option(label)


def run(args: argparse.Namespace) -> int:
    """Run the chosen `data` action."""
    if args.data_command == "fetch":
        from mlff.data.fetch import fetch_dataset

        path = fetch_dataset(args.dataset, args.molecule, cache_dir=args.cache, source=args.source, report=print)
        print(f"ready: {path}")
        return 0
    from mlff.data.optional import MissingDependencyError

    try:
        if args.data_command == "pack":
            return _run_pack(args)
        if args.data_command == "label":
            return _run_label(args)
        return _run_generate(args) if args.data_command == "generate" else _run_minimize(args)
    except MissingDependencyError as error:
        print(f"mlff data {args.data_command}: error: {error}", file=sys.stderr)
        return 2


def _run_label(args: argparse.Namespace) -> int:
    from mlff.data.label import format_report, label_frames

    result = label_frames(
        args.frames,
        args.output,
        method=args.method,
        basis=args.basis,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        report=None if args.quiet else print,
        scheduler=args.scheduler,
    )
    print(format_report(result))
    return 1 if result.failed else 0


def _run_pack(args: argparse.Namespace) -> int:
    from mlff.data.packed import PackedFrames, is_packed_path, pack

    if not is_packed_path(args.output):
        raise ValueError(f"-o {args.output}: a packed corpus is an .h5 or .hdf5 file")
    path = pack(args.inputs, args.output, energy_unit=args.energy_unit, chunk_frames=args.chunk_frames)
    with PackedFrames(path) as packed:
        summary = packed.summary()
    size = path.stat().st_size / 1e6
    print(f"packed {summary['frames']} frames of {len(args.inputs)} file(s) -> {path} ({size:.1f} MB)")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from mlff.data import molecules
    from mlff.data.generate import GenerateConfig

    config = GenerateConfig(
        method=args.method,
        basis=args.basis,
        conformers=args.conformers,
        temperatures_k=tuple(args.temperatures),
        md_frames=args.md_frames,
        timestep_fs=args.timestep_fs,
        friction_per_fs=args.friction_per_fs,
        equilibration_steps=args.equilibration_steps,
        sample_every=args.sample_every,
        fmax_ev_per_a=args.fmax,
        max_opt_steps=args.max_opt_steps,
        seed=args.seed,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
    )
    specs = molecules.g2_molecules() if args.g2 else []
    specs += molecules.structure_file_molecules(args.xyz)
    if args.smiles:
        specs += molecules.smiles_molecules(args.smiles)
    if args.smiles_file is not None:
        specs += molecules.smiles_molecules(*molecules.read_smiles_file(args.smiles_file))
    if not specs:
        raise ValueError("no molecules: give --g2, --xyz FILES, --smiles SMILES... or --smiles-file FILE")
    return _label(specs, config, args)


def _run_minimize(args: argparse.Namespace) -> int:
    from mlff.data import molecules
    from mlff.data.generate import GenerateConfig

    path, name = molecules.resolve_dataset(args.target, args.cache)
    config = GenerateConfig(
        method=args.method,
        basis=args.basis,
        conformers=1,
        temperatures_k=(),
        md_frames=0,
        fmax_ev_per_a=args.fmax,
        max_opt_steps=args.max_opt_steps,
        seed=args.seed,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
    )
    return _label(molecules.dataset_molecules(path, args.frames, name), config, args)


def _label(specs: "list[MoleculeSpec]", config: "GenerateConfig", args: argparse.Namespace) -> int:
    """Run the generator, print the per-molecule table; exit 1 only if no molecule succeeded."""
    from mlff.data.generate import format_table, generate

    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{config.workers} worker(s)"
    print(f"{len(specs)} molecules, method {config.method_label}, {where} -> {args.output}")
    report = generate(specs, config, args.output, progress=not args.no_progress, scheduler=args.scheduler)
    print(format_table(report.results, config.temperatures_k))
    ok = len(report.results) - len(report.failed)
    frames = sum(r.total_frames for r in report.results if r.status == "ok")
    print(f"{ok} of {len(report.results)} molecules labelled, {frames} frames -> {report.output}")
    print(f"summary: {report.summary_path}")
    if report.failed:
        print(f"{len(report.failed)} molecule(s) failed (see the table and the summary)", file=sys.stderr)
    return 0 if ok else 1
