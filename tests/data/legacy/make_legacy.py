"""Write the backward-compatibility fixture of tests/test_legacy_files.py (see README.md).

Run from this folder with the mlff to freeze on the path, e.g.
    cd tests/data/legacy && PYTHONPATH=/tmp/mlff-old:../.. OMP_NUM_THREADS=1 python make_legacy.py
Every path the checkpoint records is relative to this folder (mol.npz, run/).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for synthetic.py

from synthetic import EQUILIBRIUM, NUMBERS, TINY_TRAINING_OVERRIDES, write_md17_npz  # noqa: E402

import mlff  # noqa: E402
from mlff.cli.main import main  # noqa: E402
from mlff.export import load_potential  # noqa: E402
from mlff.training import load_config, train  # noqa: E402

# Two structures: the equilibrium geometry, and one with two hydrogens 0.9 A apart (inside the core repulsion).
SQUEEZED = EQUILIBRIUM.copy()
SQUEEZED[3] = SQUEEZED[2] + np.array([0.0, -0.9, 0.0])


def main_() -> None:
    torch.set_num_threads(1)
    print("mlff from", mlff.__file__)
    shutil.rmtree(HERE / "run", ignore_errors=True)
    write_md17_npz(HERE / "mol.npz", num_frames=24)
    overrides = [*TINY_TRAINING_OVERRIDES, "data.path=mol.npz", "output_dir=run", "train.epochs=1"]
    train(load_config(None, overrides), progress=False)
    for name in ("last.pt", "curve.png", "metrics.jsonl"):
        (HERE / "run" / name).unlink(missing_ok=True)
    # best.pt is the only checkpoint kept; the tests copy it to last.pt for --resume.
    assert main(["export", "run/best.pt", "-o", "potential.pt", "--core-repulsion", "50", "--no-card"]) == 0
    potential = load_potential(HERE / "potential.pt")
    positions = torch.as_tensor(np.concatenate([EQUILIBRIUM, SQUEEZED]))
    numbers = torch.as_tensor(np.concatenate([NUMBERS, NUMBERS]))
    batch = torch.repeat_interleave(torch.arange(2), len(NUMBERS))
    energy, forces = potential(positions, numbers, batch, torch.zeros(2, 3, 3), torch.zeros(2, 3, dtype=torch.bool))
    expected = {
        "positions_a": positions.tolist(),
        "atomic_numbers": numbers.tolist(),
        "batch": batch.tolist(),
        "energy_ev": energy.tolist(),
        "forces_ev_per_a": forces.tolist(),
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main_()
