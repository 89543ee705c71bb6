"""mlff's PBE/def2-SVP labeller (pyscf, as `mlff data label` and `mlff learn` use it) against rMD17's own labels.

    python examples/learn/pbe_offset.py --md17-dir DIR [--molecule ethanol] [--frames 0 5000]

Writes examples/learn/results/pbe_offset_<molecule>.json: per frame and Coulomb treatment (RI-J,
the labeller's default, as rMD17's ORCA run; and the exact four-centre Coulomb) the energy difference
(meV) and the force MAE (meV/A) between a fresh pyscf label and the file's, and the CPU seconds of
the label. A constant energy difference is an offset between the two energy zeros, which
`data.extra_energies=false` keeps out of a fine-tune on labelled frames.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from mlff.data import read_frames
from mlff.data.pyscf_calc import PySCFCalculator, PySCFSettings
from mlff.utils import format_table, write_json

HERE = Path(__file__).parent
COULOMB = {"ri-j": PySCFSettings(), "exact": PySCFSettings(auxbasis=None)}  # the labeller's default, then without RI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--md17-dir", required=True, help="folder of the rmd17_<molecule>.npz files")
    parser.add_argument("--molecule", default="ethanol")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 5000])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    frames = read_frames(Path(args.md17_dir).expanduser() / f"rmd17_{args.molecule}.npz")  # eV, eV/A
    rows = []
    for index in args.frames:
        numbers, positions, energy, forces = frames.frame(index)
        for coulomb, settings in COULOMB.items():
            atoms = Atoms(numbers=numbers, positions=positions)
            atoms.calc = PySCFCalculator(settings)
            start = time.process_time()
            label_energy, label_forces = atoms.get_potential_energy(), atoms.get_forces()
            rows.append(
                {
                    "frame": index,
                    "coulomb": coulomb,
                    "energy_difference_mev": (label_energy - energy) * 1000.0,
                    "force_mae_mev_per_a": float(np.abs(label_forces - forces).mean() * 1000.0),
                    "cpu_seconds": time.process_time() - start,
                }
            )
    write_json(args.out / f"pbe_offset_{args.molecule}.json", rows)
    columns = list(rows[0])
    print(format_table([[row[c] for c in columns] for row in rows], columns, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
