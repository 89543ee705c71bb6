"""How hot the bond stretches of stability runs are: the spread of each element pair's bond lengths
over time windows of the recordings, beside the dataset's frames and the spread equipartition gives.

For each run folder (`mlff bench stability -o DIR`/<molecule>, `mlff md -o DIR`): every replica's
recording (replica_*.h5, mdtraj), cut into --windows equal windows, gives the mean and standard
deviation of the bond lengths of each element pair (bonds as the stability check finds them, on the
dataset's first frame); the run's summary.json gives its h(r) MAE and mean temperature. A classical
ensemble at T holds a bond of stretch constant k at a standard deviation of sqrt(kB T / k); with
--stiffness, k of the first bond of --pair is measured by stretching it +-0.02 and +-0.04 A from
each given potential's minimum (and PBE/def2-SVP's with --pbe-minimum: five pyscf energies at the
minimum `mlff data minimize` found), so the runs' spreads can be read as temperatures of that stretch.

    mlff data minimize DIR/rmd17_benzene.npz --method pbe/def2-svp --fmax 0.005 -o benzene_min.extxyz
    python scripts/bond_spread.py --data DIR/rmd17_benzene.npz --pair C-H --windows 5 \\
        --run "ET, Nose-Hoover=potentials/stability-cpu/benzene" --stiffness ET=potentials/benzene.pt \\
        --pbe-minimum benzene_min.extxyz -o docs/data/bond_spread_benzene.json
"""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlff.data.reference import bond_lengths, element_pair_name, find_bonds
from mlff.units import BOLTZMANN_EV_PER_K
from mlff.utils import write_json

STRETCH_STEPS_A = np.array([-0.04, -0.02, 0.0, 0.02, 0.04])


def pair_names(atomic_numbers: np.ndarray, bonds: np.ndarray) -> list[str]:
    """Each bond's element pair name ("C-H"), as the pair h(r) names it."""
    return [element_pair_name(int(atomic_numbers[i]), int(atomic_numbers[j])) for i, j in bonds]


def spread_rows(lengths: np.ndarray, names: Sequence[str], **fields) -> list[dict]:
    """Mean and standard deviation (Angstrom) of lengths [frames, K] per element pair, one row each."""
    rows = []
    for name in sorted(set(names)):
        columns = [k for k, n in enumerate(names) if n == name]
        values = lengths[:, columns]
        spread = {"mean_a": float(values.mean()), "std_a": float(values.std())}
        rows.append({**fields, "pair": name, "bonds": len(columns), **spread})
    return rows


def run_rows(label: str, folder: Path, bonds: np.ndarray, names: Sequence[str], windows: int) -> list[dict]:
    """The spread rows of every replica recording in folder, per window of its time."""
    import mdtraj

    recordings = sorted(folder.glob("replica_*.h5"))
    if not recordings:
        raise SystemExit(f"{folder}: no replica_*.h5 recordings")
    trajectories = [mdtraj.load(str(path)) for path in recordings]
    frames = min(t.n_frames for t in trajectories)
    rows = []
    for window, chunk in enumerate(np.array_split(np.arange(frames), windows)):
        positions = np.concatenate([t.xyz[chunk] * 10.0 for t in trajectories])  # nm -> Angstrom
        # A window spans from the frame before its first (time 0 for the first) to its last frame.
        time = trajectories[0].time
        window_ps = [float(time[chunk[0] - 1]) if chunk[0] else 0.0, float(time[chunk[-1]])]
        rows += spread_rows(bond_lengths(positions, bonds), names, run=label, window=window, window_ps=window_ps)
    return rows


def run_summary(label: str, folder: Path) -> dict:
    """The run's h(r) MAE, mean temperature and length from its summary.json (None where absent)."""
    path = folder / "summary.json"
    stability = json.loads(path.read_text())["stability"] if path.is_file() else {}
    return {
        "run": label,
        "folder": str(folder),
        "hr_mae": stability.get("hr_mae"),
        "mean_temperature_k": stability.get("mean_temperature_k"),
        "length_ps": stability.get("length_ps"),
    }


def stretch_constant(energy: Callable[[np.ndarray], float], positions: np.ndarray, bond: Sequence[int]) -> float:
    """d2E/dr2 (eV/A^2) along bond (i, j), atom j moved along the bond with all else fixed: the
    curvature of a parabola through the energies at STRETCH_STEPS_A."""
    i, j = bond
    unit = (positions[j] - positions[i]) / np.linalg.norm(positions[j] - positions[i])
    energies = []
    for step in STRETCH_STEPS_A:
        moved = positions.copy()
        moved[j] += step * unit
        energies.append(energy(moved))
    return float(2.0 * np.polyfit(STRETCH_STEPS_A, np.array(energies) - energies[2], 2)[0])


def minimum(atomic_numbers: np.ndarray, positions: np.ndarray, calculator) -> np.ndarray:
    """The positions [n, 3] (Angstrom) that `mlff data minimize`'s optimiser relaxes to under
    calculator (fmax 1e-4 eV/A)."""
    from ase import Atoms

    from mlff.data.generate import optimise

    atoms = Atoms(numbers=atomic_numbers, positions=positions, calculator=calculator)
    if not optimise(atoms, fmax_ev_per_a=1e-4, max_steps=1000):
        raise SystemExit("the minimum was not reached (fmax 1e-4 eV/A in 1000 steps)")
    return atoms.get_positions()


def energy_of(atomic_numbers: np.ndarray, calculator) -> Callable[[np.ndarray], float]:
    from ase import Atoms

    def energy(positions: np.ndarray) -> float:
        return float(Atoms(numbers=atomic_numbers, positions=positions, calculator=calculator).get_potential_energy())

    return energy


def stiffness_rows(
    atomic_numbers: np.ndarray,
    start: np.ndarray,
    bond: Sequence[int],
    potentials: Sequence[str],
    pbe_minimum: str | None,
    kelvin: float,
) -> list[dict]:
    """Stretch constant of bond at each potential's minimum (and PBE/def2-SVP's, at the minimum in
    the file pbe_minimum), with its length there and the equipartition spread at kelvin."""
    from mlff.calculators import MLFFCalculator

    rows = []
    for labelled in potentials:
        label, _, path = labelled.rpartition("=")
        calculator = MLFFCalculator(path)
        relaxed = minimum(atomic_numbers, start, calculator)
        rows.append((label or path, relaxed, stretch_constant(energy_of(atomic_numbers, calculator), relaxed, bond)))
    if pbe_minimum is not None:
        import ase.io

        from mlff.data.generate import make_calculator

        relaxed = ase.io.read(pbe_minimum).get_positions()
        calculator = make_calculator("pbe/def2-svp")
        rows.append(("PBE/def2-SVP", relaxed, stretch_constant(energy_of(atomic_numbers, calculator), relaxed, bond)))
    return [
        {
            "source": source,
            "bond": [int(b) for b in bond],
            "length_at_minimum_a": float(np.linalg.norm(positions[bond[1]] - positions[bond[0]])),
            "k_ev_per_a2": k,
            "equipartition_std_a": float(np.sqrt(BOLTZMANN_EV_PER_K * kelvin / k)),
        }
        for source, positions, k in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the molecule's dataset (bonds, and its frames' spread)")
    parser.add_argument("--run", action="append", default=[], metavar="[LABEL=]DIR", help="a folder of replica_*.h5")
    parser.add_argument("--windows", type=int, default=5, help="time windows per recording")
    parser.add_argument("--pair", default="C-H", help="the element pair whose stretch --stiffness measures")
    parser.add_argument(
        "--stiffness", nargs="*", default=[], metavar="[LABEL=]POTENTIAL", help="potentials to measure k with"
    )
    parser.add_argument(
        "--pbe-minimum",
        metavar="EXTXYZ",
        help="measure k at PBE/def2-SVP too (pyscf), at this minimum of `mlff data minimize --method pbe/def2-svp`",
    )
    parser.add_argument("--temperature", type=float, default=500.0, help="K, for the equipartition spread")
    parser.add_argument("-o", "--output", required=True, help="the JSON to write")
    args = parser.parse_args(argv)

    from mlff.data.readers import read_frames

    frames = read_frames(args.data)
    count = int(frames.n_atoms[0])
    atomic_numbers = frames.atomic_numbers[:count]
    positions = frames.positions.reshape(-1, count, 3)
    bonds = find_bonds(atomic_numbers, positions[0])
    names = pair_names(atomic_numbers, bonds)
    rows = spread_rows(bond_lengths(positions, bonds), names, run="dataset frames", window=None, window_ps=None)
    runs = []
    for labelled in args.run:
        label, _, folder = labelled.rpartition("=")
        rows += run_rows(label or folder, Path(folder), bonds, names, args.windows)
        runs.append(run_summary(label or folder, Path(folder)))
    stiffness = []
    if args.stiffness or args.pbe_minimum:
        if args.pair not in names:
            raise SystemExit(f"no {args.pair} bond in {args.data}; its pairs: {sorted(set(names))}")
        bond = bonds[names.index(args.pair)]
        stiffness = stiffness_rows(
            atomic_numbers, positions[0], bond, args.stiffness, args.pbe_minimum, args.temperature
        )
    result = {"data": args.data, "pair": args.pair, "temperature_k": args.temperature}
    write_json(args.output, {**result, "runs": runs, "rows": rows, "stiffness": stiffness})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
