"""Periodic data (issue 19, items 5-7): generate on a box, periodic frames in training, per-pair h(r)
with minimum image, the liquid stability criterion, the torch engine in a box, the water pipeline
and the ML/MM example."""

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import load_script, require_module, tiny_config
from synthetic import TINY_TRAINING_OVERRIDES

from mlff import MLFFCalculator
from mlff.data import read_frames
from mlff.data.batch import FrameTensors
from mlff.data.generate import GenerateConfig, label_molecule
from mlff.data.molecules import structure_file_molecules
from mlff.data.reference import find_bonds, half_width, hr_density, molecular_bonds, pair_distance_counts
from mlff.dynamics.observers import RDFObserver, StabilityObserver
from mlff.dynamics.runner import replica_observers
from mlff.export import export_model
from mlff.models import build_model
from mlff.training import load_config, train
from mlff.training.config import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


BUILD_BOX = load_script(ROOT / "examples" / "water" / "build_box.py", "water_build_box")


def water_box(molecules: int = 4, box_a: float = 6.0, seed: int = 0) -> Atoms:
    return BUILD_BOX.water_box(molecules, box_a, seed)


@pytest.fixture(scope="module")
def periodic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(tiny_config(), [1, 6, 8], [0.0, 0.0, 0.0], 50.0).eval()
    return export_model(model, tmp_path_factory.mktemp("periodic") / "periodic.pt", config=tiny_config())


def test_generate_on_a_periodic_box_keeps_cell_and_pbc_without_constraints(tmp_path):
    box = water_box(3, 6.0)
    ase.io.write(tmp_path / "box.extxyz", box)
    (spec,) = structure_file_molecules([tmp_path / "box.extxyz"])
    assert spec.periodic and np.allclose(spec.cell, box.cell.array)
    config = GenerateConfig(temperatures_k=(300.0,), md_frames=3, equilibration_steps=0, sample_every=2)
    # A cheap periodic calculator: the contract (no optimisation, no constraints, cell kept), not xTB.
    calculator = LennardJones(sigma=1.5, epsilon=0.005, rc=2.9, smooth=True)
    frames, result = label_molecule(spec, config, calculator)
    assert result.equilibrium_frames == 0 and result.md_frames == {"300": 3}
    assert len(frames) == 3 and not any(frame.info["equilibrium"] for frame in frames)
    for frame in frames:
        assert frame.pbc.all() and np.allclose(frame.cell.array, box.cell.array) and not frame.constraints
    # Unconstrained MD in a box: the centre of mass is not pinned (FixCom would keep it exactly).
    assert not np.allclose(frames[-1].get_center_of_mass(), box.get_center_of_mass(), atol=1e-9)
    ase.io.write(tmp_path / "out.extxyz", frames)
    read = read_frames(tmp_path / "out.extxyz")
    assert read.pbc.all() and np.allclose(read.cell, box.cell.array)
    np.testing.assert_allclose(read.forces[: len(box)], frames[0].get_forces(), rtol=1e-6, atol=1e-8)


def label_with(path: Path, atoms_list: list[Atoms]) -> list[Atoms]:
    calculator = MLFFCalculator(path)
    labelled = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = calculator
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        labelled.append(atoms)
    return labelled


def test_periodic_batches_carry_cell_and_pbc_to_the_model(periodic_file, tmp_path):
    # A 5 A box (under twice the 5 A cutoff): images matter, so cell/pbc dropped would change the forces.
    boxes = [water_box(2, 5.0, seed) for seed in range(10)]
    ase.io.write(tmp_path / "boxes.extxyz", label_with(periodic_file, boxes))
    frames = read_frames(tmp_path / "boxes.extxyz")
    assert frames.periodic.all()
    batch = FrameTensors(frames, dtype=torch.float64).batch(np.array([0, 1]))
    assert batch.pbc.all() and torch.allclose(batch.cell[0], torch.as_tensor(boxes[0].cell.array))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(tiny_config(), [1, 6, 8], [0.0, 0.0, 0.0], 50.0).eval()
    _, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
    # The labels went through extxyz (8 significant digits).
    np.testing.assert_allclose(forces.detach().numpy(), frames.forces[: 2 * len(boxes[0])], atol=1e-7)
    _, isolated = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, torch.zeros_like(batch.pbc))
    assert not np.allclose(isolated.detach().numpy(), frames.forces[: 2 * len(boxes[0])], atol=1e-4)


@pytest.mark.slow
def test_periodic_frames_train(periodic_file, tmp_path):
    boxes = [water_box(2, 5.0, seed) for seed in range(10)]
    ase.io.write(tmp_path / "boxes.extxyz", label_with(periodic_file, boxes))
    overrides = [
        *TINY_TRAINING_OVERRIDES,
        f"data.path={tmp_path / 'boxes.extxyz'}",
        f"output_dir={tmp_path / 'run'}",
        "train.epochs=1",
    ]
    result = train(load_config(None, overrides), progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.best_val_force_mae)
    assert all(np.isfinite(value) for value in result.test_metrics.values())


def test_compiled_training_refuses_periodic_frames(periodic_file, tmp_path):
    boxes = [water_box(2, 5.0, seed) for seed in range(10)]
    ase.io.write(tmp_path / "boxes.extxyz", label_with(periodic_file, boxes))
    overrides = [*TINY_TRAINING_OVERRIDES, f"data.path={tmp_path / 'boxes.extxyz'}", f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="train.compile is for isolated molecules"):
        train(load_config(None, [*overrides, "train.compile=true"]), progress=False)


def numpy_minimum_image_counts(numbers, positions, box_a, r_max_a, bins) -> dict[str, np.ndarray]:
    """Reference: orthorhombic minimum image by rounding, pair by pair."""
    counts: dict[str, np.ndarray] = {}
    names = {1: "H", 8: "O"}
    for i in range(len(numbers)):
        for j in range(i + 1, len(numbers)):
            delta = positions[j] - positions[i]
            delta -= box_a * np.round(delta / box_a)
            key = "-".join(sorted((names[numbers[i]], names[numbers[j]]), key=lambda s: -"HO".index(s)))
            histogram, _ = np.histogram([np.linalg.norm(delta)], bins=bins, range=(0.0, r_max_a))
            counts[key] = counts.get(key, 0) + histogram
    return counts


def test_per_pair_hr_with_minimum_image_equals_numpy():
    box = water_box(6, 7.0, seed=3)
    shifted = box.positions + np.random.default_rng(0).integers(-2, 3, (len(box), 1)) * 7.0
    counts = pair_distance_counts(box.numbers, shifted, box.cell.array, box.pbc, r_max_a=3.5, bins=35)
    expected = numpy_minimum_image_counts(box.numbers, box.positions, 7.0, 3.5, 35)
    assert sorted(counts) == ["H-H", "O-H", "O-O"] == sorted(expected)
    for name in counts:
        np.testing.assert_array_equal(counts[name], expected[name])
    assert half_width(box.cell.array, box.pbc) == pytest.approx(3.5)
    observer = RDFObserver(r_max_a=3.5, bins=35, atomic_numbers=box.numbers, cell=box.cell.array, pbc=box.pbc)
    observer.counts = np.zeros(35, dtype=np.int64)
    observer.observe(0, 0.0, shifted)
    np.testing.assert_allclose(observer.pair_density("O-O"), hr_density(expected["O-O"], 3.5))
    assert observer.counts.sum() == sum(c.sum() for c in expected.values())


def test_liquid_stability_uses_intramolecular_bonds_only():
    box = water_box(8, 7.5, seed=1)
    bonds, labels = molecular_bonds(box.numbers, box.positions, box.cell.array, box.pbc)
    assert len(bonds) == 16 and labels.max() + 1 == 8
    assert all(labels[i] == labels[j] for i, j in bonds)
    stability, rdf = replica_observers(box, {}, 0.5)
    assert isinstance(stability, StabilityObserver) and len(stability.bonds) == 16
    assert rdf.r_max_a == pytest.approx(3.75)
    stability.observe(0, 0.0, box.positions)
    # Molecule 0 diffuses across the box face (its atoms wrapped into the other side one by one).
    moved = box.positions.copy()
    moved[:3] += np.array([4.0, 0.0, 0.0])
    moved[:3, 0] %= 7.5
    stability.observe(10, 10.0, moved)
    assert not stability.collapsed
    # An O-H bond of molecule 1 stretched by 0.8 A: a collapse.
    broken = moved.copy()
    direction = broken[4] - broken[3]
    broken[4] += 0.8 * direction / np.linalg.norm(direction)
    stability.observe(20, 20.0, broken)
    assert stability.collapsed and stability.collapsed_at_fs == 20.0


@pytest.mark.parametrize("name, expected", [("CH3OH", 5), ("CH3CH2OH", 8), ("C6H6", 12)])
def test_molecular_bonds_find_every_covalent_bond(name, expected):
    # C-H (1.09 A) is longer than the covalent radii's sum (1.07 A): found only with the skin.
    atoms = molecule(name)
    bonds, labels = molecular_bonds(atoms.numbers, atoms.positions)
    assert len(bonds) == expected and labels.max() == 0
    np.testing.assert_array_equal(bonds, find_bonds(atoms.numbers, atoms.positions))


def test_a_thermally_stretched_oh_bond_is_still_a_bond():
    box = water_box(8, 7.5, seed=1)
    stretched = box.positions.copy()
    direction = stretched[1] - stretched[0]
    stretched[1] = stretched[0] + 1.05 * direction / np.linalg.norm(direction)
    bonds, labels = molecular_bonds(box.numbers, stretched, box.cell.array, box.pbc)
    assert len(bonds) == 16 and labels.max() + 1 == 8 and [0, 1] in bonds.tolist()


def test_the_torch_engine_runs_a_periodic_box(periodic_file):
    from mlff.dynamics.settings import MDSettings
    from mlff.dynamics.torch_engine import TorchEngine
    from mlff.export import load_potential

    box = water_box(2, 5.0, seed=2)
    potential = load_potential(periodic_file)
    settings = MDSettings(steps=4, timestep_fs=0.25, temperature_k=300.0)
    engine = TorchEngine(potential, [box], settings)
    box.calc = MLFFCalculator(periodic_file)
    np.testing.assert_allclose(engine.state.forces.cpu().numpy(), box.get_forces(), rtol=1e-8, atol=1e-10)
    wrapped = box.copy()
    wrapped.positions[0] += wrapped.cell.array[0]
    np.testing.assert_allclose(
        TorchEngine(potential, [wrapped], settings).state.forces.cpu().numpy(), box.get_forces(), atol=1e-9
    )


def test_the_mlmm_example_runs_a_few_steps(periodic_file, tmp_path, capsys):
    require_module("openmmtorch")
    require_module("openmmml")
    require_module("mdtraj")
    example = load_script(ROOT / "examples" / "openmm_mlmm_water.py", "openmm_mlmm_water")
    ase.io.write(tmp_path / "methanol.xyz", molecule("CH3OH"))
    arguments = ["--potential", str(periodic_file), "--structure", str(tmp_path / "methanol.xyz")]
    arguments += [
        "--steps",
        "4",
        "--report-every",
        "2",
        "--padding-nm",
        "0.6",
        "--minimize-steps",
        "5",
        "--out",
        str(tmp_path / "mlmm"),
    ]
    assert example.main(arguments) == 0
    out = capsys.readouterr().out
    assert "6 ML atoms in" in out and "steps/s" in out and "trajectory: 2 frames" in out
    result = json.loads((tmp_path / "mlmm" / "mlmm.json").read_text())
    assert result["ml_atoms"] == 6 and result["steps"] == 4 and result["atoms"] == 6 + 3 * result["waters"]
    # 4 steps of 0.5 fs from a minimised start: the molecule's bonds barely move.
    assert 0.0 < result["largest_bond_deviation_a"] < 0.1
    assert result["mean_temperature_k"] > 0.0


@pytest.mark.slow
def test_the_water_pipeline_on_a_tiny_box(tmp_path):
    require_module("tblite")
    script = ROOT / "examples" / "water" / "pipeline.py"
    command = [sys.executable, str(script), "--tiny", "--out", str(tmp_path / "water")]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "O-O h(r) MAE" in finished.stdout
