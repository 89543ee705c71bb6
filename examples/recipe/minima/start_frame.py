"""The start of a PBE/def2-SVP minimisation: the lowest-energy rMD17 frame of a molecule, minimised
with its shipped potential (BFGS to 5 meV/A), so that the DFT optimisation needs few gradients.

    python examples/recipe/minima/start_frame.py naphthalene DIR/rmd17_naphthalene.npz /tmp/naphthalene_start.npz
    mlff --threads 1 data minimize /tmp/naphthalene_start.npz --method pbe/def2-svp --fmax 0.01 \
        -o examples/recipe/minima/naphthalene_pbe.extxyz

The output is one frame in the MD17 npz layout (`mlff data minimize` reads it; atom order kept;
E and F are the rMD17 frame's, unused by the minimisation).
"""

import sys

import numpy as np
from ase import Atoms
from ase.optimize import BFGS

from mlff.calculators import MLFFCalculator


def main(molecule: str, dataset: str, output: str) -> None:
    data = np.load(dataset)
    index = int(np.argmin(data["E"]))
    atoms = Atoms(numbers=data["z"], positions=data["R"][index])
    atoms.calc = MLFFCalculator(molecule)
    BFGS(atoms, logfile=None).run(fmax=0.005, steps=500)
    print(f"{molecule}: rMD17 frame {index}, model fmax {np.abs(atoms.get_forces()).max():.4f} eV/A")
    positions = atoms.positions[None]
    np.savez(output, R=positions, E=data["E"][index : index + 1], F=data["F"][index : index + 1], z=data["z"])


if __name__ == "__main__":
    main(*sys.argv[1:4])
