"""`mlff export CHECKPOINT -o POTENTIAL.pt`: a training checkpoint -> a standalone potential file.

Library imports happen inside `run`: building the parser imports every
subcommand module, and `mlff --help` should not import torch.
"""

import argparse
from pathlib import Path
from typing import Any

from mlff.utils import DTYPE_NAMES


def add_parser(subparsers: Any) -> None:
    """Register the `export` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="turn a training checkpoint into a potential file",
        description="Write a training checkpoint as a TorchScript potential file with metadata; "
        "the file runs with torch.jit.load alone.",
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        help="training checkpoint (.pt), the folder of a committee run (train.committee > 1: one committee "
        "file), or a potential file with --reference-data",
    )
    parser.add_argument(
        "--committee",
        type=Path,
        nargs="+",
        default=None,
        metavar="CHECKPOINT",
        help="write these checkpoints (>= 2) as one committee file: forward gives the members' mean, "
        "energy_forces_spread adds the per-atom force spread",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="potential file to write (.pt)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw weights (default: ema)")
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default="float64",
        help="network dtype of the file (default: float64)",
    )
    parser.add_argument(
        "--reference-data",
        default=None,
        help="dataset of the molecule: its start frames, bond lengths and h(r) become the file's reference "
        "statistics (for MD stability checks with no dataset)",
    )
    parser.add_argument(
        "--core-repulsion",
        type=float,
        default=0.0,
        metavar="EV_PER_A3",
        help="k > 0: the cubic core repulsion: pairs closer than their element pair's onset r0 add "
        "k (r0 - r)^3 eV, so MD cannot fall into unlearnt short distances (default 0: off)",
    )
    parser.add_argument(
        "--repulsion",
        choices=("cubic", "zbl"),
        default=None,
        help="the core repulsion: cubic (with --core-repulsion K, which alone means cubic) or zbl (the ZBL "
        "screened nuclear repulsion, no strength to give, switched off smoothly at r0). Onsets r0: the "
        "shortest distance of the element pair within the cutoff in the training frames, else 0.6 x the "
        "sum of covalent radii; zero on every training frame (default: none)",
    )
    parser.add_argument(
        "--check-data",
        default=None,
        help="the labelled dataset of the training run: the card records the potential's errors on a fixed "
        "subset of its test split (frame indices and MAE), for anyone to reproduce",
    )
    parser.add_argument(
        "--format",
        choices=("torchscript", "aoti"),
        default="torchscript",
        help="torchscript (default: the portable file, periodic and stress) or aoti (a torch.export + "
        "AOTInductor package, .pt2: compiled for one device and this torch, isolated molecules only; "
        "CHECKPOINT may be a TorchScript potential file to convert)",
    )
    parser.add_argument("--device", default="cpu", help="the device an aoti package is compiled for (cpu, cuda)")
    parser.add_argument("--no-card", action="store_true", help="do not write the model card (OUTPUT with .yaml)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export the checkpoint and print what was written."""
    from mlff.export.card import write_model_card
    from mlff.export.load import read_metadata
    from mlff.utils import species_symbols

    if args.check_data and args.no_card:
        raise ValueError("--check-data fills the model card's check section; it cannot go with --no-card")
    path = _export(args)
    metadata = read_metadata(path)
    training = metadata.get("training") or {}
    species = species_symbols(metadata["species"])
    size_kib = path.stat().st_size / 1024
    print(
        f"wrote {path} ({size_kib:.0f} KiB): species {species}, cutoff {metadata['cutoff']} A, "
        f"{metadata['dtype']}, {training.get('weights')} weights of epoch {training.get('epoch')}"
    )
    committee = metadata.get("committee")
    if committee:
        threshold = committee.get("spread_threshold_ev_per_a")
        fitted = (
            f"selection threshold {threshold:.4f} eV/A (percentile {committee['spread_percentile']:g} of the "
            f"{committee['training_spread']['frames']} training frames' largest force spread)"
            if threshold is not None
            else "no spread threshold (no single training data file)"
        )
        print(f"committee of {committee['members']} members; {fitted}")
    if args.reference_data:
        print(f"reference statistics from {args.reference_data}")
    if metadata.get("core_repulsion"):
        print(_describe_repulsion(metadata["core_repulsion"]))
    if not args.no_card:
        print(f"wrote model card {write_model_card(path, check_data=args.check_data)}")
    return 0


def _export(args: argparse.Namespace) -> Path:
    """Export a checkpoint, or re-write a potential file, with the reference statistics asked for."""
    from mlff.data.reference import dataset_reference
    from mlff.export.committee import committee_checkpoints, export_committee, is_committee_run
    from mlff.export.deploy import export_checkpoint, replace_reference
    from mlff.export.load import is_potential_file

    if (args.checkpoint is None) == (args.committee is None):
        raise ValueError("give one CHECKPOINT (a checkpoint, committee run folder or potential file) or --committee")
    committee = args.committee is not None or is_committee_run(args.checkpoint)
    if not committee and is_potential_file(args.checkpoint):
        if args.core_repulsion or args.repulsion:
            raise ValueError("a core repulsion needs the training checkpoint (its data), not a potential file")
        if args.format == "aoti" and not args.reference_data:
            from mlff.export.deploy import convert_potential

            return convert_potential(args.checkpoint, args.output, "aoti", args.device)
        if not args.reference_data:
            raise ValueError(f"{args.checkpoint} is a potential file already; --reference-data is all export can add")
        return replace_reference(args.checkpoint, dataset_reference(args.reference_data), args.output)
    if committee and args.format != "torchscript":
        raise ValueError("a committee file is TorchScript only (--format torchscript)")
    if args.format == "aoti" and args.reference_data:
        raise ValueError(
            "--reference-data rewrites a TorchScript file; export it first, then convert it with --format aoti"
        )
    if committee:
        source = args.committee if args.committee is not None else committee_checkpoints(args.checkpoint)
        exporter = export_committee
    else:
        source, exporter = args.checkpoint, export_checkpoint
    path = exporter(
        source,
        args.output,
        weights=args.weights,
        dtype=args.dtype,
        core_repulsion_ev_per_a3=args.core_repulsion,
        repulsion=args.repulsion,
        **({"format": args.format, "device": args.device} if not committee else {}),
    )
    if args.reference_data:
        replace_reference(path, dataset_reference(args.reference_data), path)
    return path


def _describe_repulsion(repulsion: dict[str, Any]) -> str:
    """One line: the core repulsion's kind and which element pairs' onsets were seen or came from radii."""
    from mlff.utils import element_symbol

    species, sources = repulsion["species"], repulsion.get("onset_sources")
    kind = repulsion.get("kind", "cubic")
    if sources is None:  # files written before the onset rule had every onset seen
        return f"core repulsion {kind}"
    groups: dict[str, list[str]] = {"seen": [], "radii": []}
    for a in range(len(species)):
        for b in range(a, len(species)):
            groups[sources[a][b]].append(f"{element_symbol(species[a])}-{element_symbol(species[b])}")
    return (
        f"core repulsion {kind}: onsets seen in the training frames for {', '.join(groups['seen']) or 'no pair'}; "
        f"from covalent radii for {', '.join(groups['radii']) or 'no pair'}"
    )
