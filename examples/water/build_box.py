"""A periodic box of water molecules at about liquid density, as an extxyz (the input of `mlff data generate`).

Molecules are inserted at random positions and orientations (a rigid gas-phase water from ASE),
each kept only if every atom is at least `min_distance_a` from every atom of the others under
minimum image, so the start has no overlaps; MD relaxes the rest. Usage:

    python examples/water/build_box.py -o box.extxyz [--molecules 32] [--box-a 9.86] [--seed 0]
"""

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import molecule
from scipy.spatial.transform import Rotation

# g/cm^3 -> molecules/A^3 for water (18.015 g/mol).
WATER_PER_A3_AT_1_G_CM3 = 6.02214076e23 / 18.015 / 1e24


def liquid_box_length(molecules: int, density_g_cm3: float = 1.0) -> float:
    """Edge (Angstrom) of the cubic box holding `molecules` waters at `density_g_cm3`."""
    return float((molecules / (WATER_PER_A3_AT_1_G_CM3 * density_g_cm3)) ** (1.0 / 3.0))


def water_box(molecules: int, box_a: float, seed: int = 0, min_distance_a: float = 1.9, tries: int = 100_000) -> Atoms:
    """`molecules` waters (O, H, H each, in that order) in a cubic periodic box of edge `box_a` Angstrom.

    Raises:
        RuntimeError: the molecules do not fit with `min_distance_a` after `tries` insertions.
    """
    rng = np.random.default_rng(seed)
    template = molecule("H2O")
    template.positions -= template.positions[0]
    order = [
        template.get_chemical_symbols().index("O"),
        *[k for k, s in enumerate(template.get_chemical_symbols()) if s == "H"],
    ]
    local = template.positions[order]
    placed: list[np.ndarray] = []
    for _ in range(tries):
        if len(placed) == molecules:
            break
        candidate = Rotation.random(random_state=rng).apply(local) + rng.uniform(0.0, box_a, 3)
        if placed:
            others = np.concatenate(placed)
            delta = candidate[:, None, :] - others[None, :, :]
            delta -= box_a * np.round(delta / box_a)
            if np.sqrt((delta**2).sum(-1)).min() < min_distance_a:
                continue
        placed.append(candidate)
    if len(placed) < molecules:
        raise RuntimeError(f"placed {len(placed)} of {molecules} waters in a {box_a} A box; lower min_distance_a")
    atoms = Atoms("OHH" * molecules, positions=np.concatenate(placed), cell=np.eye(3) * box_a, pbc=True)
    atoms.wrap()
    return atoms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--molecules", type=int, default=32)
    parser.add_argument("--box-a", type=float, default=None, help="default: the edge at 1 g/cm^3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    box = args.box_a if args.box_a is not None else liquid_box_length(args.molecules)
    atoms = water_box(args.molecules, box, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.output, atoms, format="extxyz")
    print(f"{args.molecules} waters in a {box:.3f} A box -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
