"""MLFFCalculator: ASE's protocol, forces = -dE/dR, caching, bad input, optimisers and MD."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from conftest import build_tiny_model, tiny_config

from mlff import MLFFCalculator, load_potential
from mlff.export import export_model, read_metadata

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def atoms(methanol):
    numbers, positions = methanol
    return Atoms(numbers=numbers, positions=positions)


def test_energy_and_forces_equal_the_potential(potential_file, atoms):
    atoms.calc = MLFFCalculator(potential_file)
    energy, forces = load_potential(potential_file).energy_and_forces(atoms.numbers, atoms.positions)
    assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=1e-12, atol=1e-15)
    assert atoms.get_forces().dtype == np.float64


def test_accepts_a_loaded_potential(potential_file, atoms):
    potential = load_potential(potential_file, dtype="float32")
    atoms.calc = MLFFCalculator(potential)
    assert atoms.calc.potential is potential and potential.dtype == torch.float32, "the dtype is left as loaded"
    assert np.isfinite(atoms.get_potential_energy())
    MLFFCalculator(potential, dtype="float64")
    assert potential.dtype == torch.float64, "an explicit dtype converts"


def test_runs_in_the_files_dtype_unless_told(tmp_path, atoms):
    """The dtype policy of every entry point: the file's dtype, unless the caller passes one."""
    path = export_model(build_tiny_model(), tmp_path / "single.pt", dtype="float32", config=tiny_config())
    assert MLFFCalculator(path).potential.dtype == torch.float32
    assert MLFFCalculator(path, dtype="float64").potential.dtype == torch.float64
    atoms.calc = MLFFCalculator(path)
    assert atoms.get_forces().dtype == np.float64, "ASE gets float64 arrays whatever the network's dtype"


def test_shipped_potential_by_name(atoms):
    calculator = MLFFCalculator("ethanol")
    assert calculator.potential.metadata["reference"]["atomic_numbers"], "the shipped ethanol potential"
    assert calculator.potential.dtype == torch.float32, "the shipped files are float32 and run as such"
    ethanol = Atoms(
        numbers=calculator.potential.metadata["reference"]["atomic_numbers"],
        positions=calculator.potential.metadata["reference"]["start_positions"][0],
    )
    ethanol.calc = calculator
    assert np.isfinite(ethanol.get_potential_energy())
    assert np.abs(ethanol.get_forces()).max() > 1e-3


def test_unknown_name_lists_the_shipped_potentials():
    with pytest.raises(FileNotFoundError, match="shipped: aspirin, benzene, ethanol"):
        MLFFCalculator("ethanoll")


def test_small_molecules_run_on_one_thread(potential_file, atoms, monkeypatch):
    """Unless the user chose a thread count, the calculator sizes it to its atoms: 1 below the threshold."""
    import mlff.threads

    for name in mlff.threads.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlff.threads, "_user_threads", None)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        atoms.calc = MLFFCalculator(potential_file)
        atoms.get_potential_energy()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        atoms.calc = MLFFCalculator(potential_file)
        atoms.get_potential_energy()
        assert torch.get_num_threads() == 2, "OMP_NUM_THREADS is the user's choice"
    finally:
        torch.set_num_threads(previous)


def test_forces_are_minus_energy_gradient(potential_file, atoms):
    atoms.calc = MLFFCalculator(potential_file)
    forces = atoms.get_forces()
    step = 1e-4
    numerical = np.zeros_like(forces)
    for atom in range(len(atoms)):
        for axis in range(3):
            energies = []
            for sign in (1.0, -1.0):
                displaced = atoms.copy()
                displaced.positions[atom, axis] += sign * step
                displaced.calc = atoms.calc
                energies.append(displaced.get_potential_energy())
            numerical[atom, axis] = -(energies[0] - energies[1]) / (2 * step)
    np.testing.assert_allclose(numerical, forces, rtol=1e-4, atol=1e-7)
    assert np.abs(forces).max() > 1e-5


def test_results_are_cached_until_atoms_change(potential_file, atoms, monkeypatch):
    calculator = MLFFCalculator(potential_file)
    calls = []
    compute = calculator.potential.energy_and_forces
    monkeypatch.setattr(calculator.potential, "energy_and_forces", lambda *args: calls.append(1) or compute(*args))
    atoms.calc = calculator
    first = atoms.get_forces()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    assert not np.allclose(atoms.get_forces(), first)
    assert len(calls) == 2


def test_unknown_element_names_symbol_and_species(potential_file, atoms):
    atoms.numbers[1] = 9
    atoms.calc = MLFFCalculator(potential_file)
    with pytest.raises(ValueError, match=r"F \(Z=9\) not in the potential's species \(H C O\)"):
        atoms.get_potential_energy()


def test_nan_position(potential_file, atoms):
    atoms.positions[2, 1] = np.nan
    atoms.calc = MLFFCalculator(potential_file)
    with pytest.raises(ValueError, match=r"atom\(s\) \[2\] are NaN or inf"):
        atoms.get_forces()


def test_periodic_atoms_are_refused_by_a_format_v1_file(atoms):
    atoms.cell = [10.0, 10.0, 10.0]
    atoms.pbc = True
    atoms.calc = MLFFCalculator(Path(__file__).parent / "data" / "legacy" / "potential.pt")
    with pytest.raises(ValueError, match="periodic boundary conditions"):
        atoms.get_potential_energy()


def test_bfgs_reduces_fmax(spring_potential_file):
    triangle = Atoms("H3", positions=[[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.3, 1.0, 0.0]])
    triangle.calc = MLFFCalculator(spring_potential_file)

    def fmax():
        return float(np.linalg.norm(triangle.get_forces(), axis=1).max())

    initial_fmax, initial_energy = fmax(), triangle.get_potential_energy()
    BFGS(triangle, logfile=None).run(fmax=1e-4, steps=8)
    assert fmax() < 0.1 * initial_fmax
    assert triangle.get_potential_energy() < initial_energy
    assert triangle.get_all_distances()[np.triu_indices(3, 1)] == pytest.approx([1.2] * 3, abs=0.05)


def test_velocity_verlet_conserves_energy(potential_file, atoms):
    atoms.calc = MLFFCalculator(potential_file)
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(0.0, 0.2, size=(len(atoms), 3)) * np.sqrt(atoms.get_masses())[:, None])
    initial = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(20)
    assert np.isfinite(atoms.positions).all()
    assert atoms.get_total_energy() == pytest.approx(initial, abs=1e-5)


@pytest.mark.parametrize("backbone", ["transformer", "et"])
def test_attention_backbones_run_through_the_calculator(backbone, atoms, tmp_path):
    """Export a tiny model of the backbone; the calculator gives its energy and forces unchanged."""
    model = build_tiny_model(backbone=backbone).eval()
    path = export_model(model, tmp_path / f"{backbone}.pt", config=tiny_config(backbone=backbone))
    assert read_metadata(path)["model"]["backbone"] == backbone
    atoms.calc = MLFFCalculator(path)
    positions = torch.tensor(atoms.positions, dtype=torch.float64)
    numbers = torch.tensor(atoms.numbers, dtype=torch.long)
    no_cell = (torch.zeros(1, 3, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.bool))
    energy, forces = model(positions, numbers, torch.zeros(len(atoms), dtype=torch.long), *no_cell)
    assert atoms.get_potential_energy() == pytest.approx(float(energy.detach()), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert np.abs(atoms.get_forces()).max() > 1e-5
    # No external field: the forces sum to zero.
    np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0.0, atol=1e-12)


def test_thread_policy_sizes_by_atoms_and_yields_to_the_user(monkeypatch):
    import mlff.threads

    for name in mlff.threads.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(mlff.threads, "_user_threads", None)
    threshold = mlff.threads.SECOND_THREAD_MIN_ATOMS
    assert mlff.threads.threads_for_atoms(threshold - 1, 8) == 1
    assert mlff.threads.threads_for_atoms(threshold, 8) == 8
    previous = torch.get_num_threads()
    try:
        assert mlff.threads.apply_thread_policy(9) == 1 and torch.get_num_threads() == 1
        mlff.threads.set_user_threads(2)
        assert mlff.threads.apply_thread_policy(9) is None and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match=">= 1"):
            mlff.threads.set_user_threads(0)
    finally:
        torch.set_num_threads(previous)
