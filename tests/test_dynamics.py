"""MD through ASE: stability observer, temperature, energy drift, `mlff md`."""

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write
from synthetic import write_md17_npz

from mlff.cli.main import main
from mlff.dynamics import MDSettings, StabilityObserver, load_structure, run_md
from mlff.dynamics.thermo import energy_drift_mev_per_ps_atom, temperature_k
from mlff.units import BOLTZMANN_EV_PER_K

pytestmark = pytest.mark.usefixtures("single_thread")

TETRAHEDRON = 1.2 / np.sqrt(8.0) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)


@pytest.fixture
def h4_file(tmp_path):
    path = tmp_path / "h4.xyz"
    write(path, Atoms("H4", positions=TETRAHEDRON))
    return path


def test_stability_observer_finds_the_first_collapsed_frame():
    bonds = np.array([[0, 1]])
    observer = StabilityObserver(bonds, np.array([1.0]), max_deviation_a=0.5)
    for step, length in enumerate([1.0, 1.3, 1.45, 1.6, 1.0]):
        observer.observe(step, 50.0 * step, np.array([[0.0, 0.0, 0.0], [length, 0.0, 0.0]]))
    summary = observer.summary()
    assert summary["collapsed"] and observer.collapsed_at_fs == 150.0
    assert summary["stable_time_ps"] == pytest.approx(0.1)
    assert summary["largest_bond_deviation_a"] == pytest.approx(0.6)


def test_temperature_removes_centre_of_mass_motion():
    masses = np.array([1.0, 2.0, 3.0])
    drift = np.tile([0.3, -0.1, 0.2], (3, 1))
    assert temperature_k(masses, drift) == pytest.approx(0.0, abs=1e-12)
    velocities = np.array([[0.1, 0.0, 0.0], [-0.05, 0.0, 0.0], [0.0, 0.0, 0.0]])
    kinetic = 0.5 * (1.0 * 0.1**2 + 2.0 * 0.05**2)
    assert temperature_k(masses, velocities + drift) == pytest.approx(2 * kinetic / (6 * BOLTZMANN_EV_PER_K))


def test_energy_drift_is_a_fitted_slope():
    times = np.arange(0.0, 1000.0, 10.0)
    energies = -5.0 + 2e-6 * times
    assert energy_drift_mev_per_ps_atom(times, energies, num_atoms=4) == pytest.approx(2e-6 * 1e6 / 4)


def test_nve_md_is_stable_conserves_energy_and_writes_its_outputs(spring_potential_file, h4_file, tmp_path):
    settings = MDSettings(steps=400, timestep_fs=0.25, temperature_k=300.0, thermostat="nve", save_every=20)
    summary = run_md(spring_potential_file, str(h4_file), settings, tmp_path / "md")
    assert summary["stability"]["collapsed"] is False and summary["stability"]["bonds"] == 6
    assert summary["throughput"]["steps"] == 400 and summary["throughput"]["steps_per_second"] > 0
    assert 0.0 < summary["throughput"]["potential_time_fraction"] <= 1.0
    assert abs(summary["throughput"]["energy_drift_mev_per_ps_atom"]) < 1.0
    frames = read(tmp_path / "md" / "trajectory.traj", index=":")
    assert len(frames) == 20
    thermo = np.loadtxt(tmp_path / "md" / "thermo.csv", delimiter=",", skiprows=1)
    total = thermo[:, 2] + thermo[:, 3]
    assert np.ptp(total) < 2e-3
    assert json.loads((tmp_path / "md" / "summary.json").read_text())["stability"]["collapsed"] is False


def test_a_collapsing_run_stops_and_says_so(spring_potential_file, tmp_path):
    stretched = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]])
    write(tmp_path / "h2.xyz", stretched)
    settings = MDSettings(steps=2000, timestep_fs=0.5, temperature_k=50000.0, thermostat="langevin", save_every=5)
    summary = run_md(spring_potential_file, str(tmp_path / "h2.xyz"), settings)
    assert summary["stability"]["collapsed"] is True
    assert summary["throughput"]["steps"] < 2000


def test_structure_from_dataset_index(tmp_path):
    path = write_md17_npz(tmp_path / "mol.npz", num_frames=5)
    atoms = load_structure(f"{path}:3", {})
    np.testing.assert_allclose(atoms.get_positions(), np.load(path)["R"][3])
    with pytest.raises(ValueError, match="5 frames"):
        load_structure(f"{path}:7", {})
    with pytest.raises(ValueError, match="no start structure"):
        load_structure(None, {})


def test_md_command_prints_stability_and_speed(spring_potential_file, h4_file, capsys):
    code = main(["md", str(spring_potential_file), "--structure", str(h4_file), "--steps", "40", "--save-every", "10"])
    output = capsys.readouterr().out
    assert code == 0
    assert "stability: stable" in output and "steps/s" in output and "ns/day" in output


def test_protocol_file_and_overrides(tmp_path):
    from mlff.dynamics import load_protocol

    protocol = load_protocol(Path(__file__).resolve().parents[1] / "md" / "quick-500k.yaml", steps=10)
    assert protocol.temperature_k == 500.0 and protocol.timestep_fs == 0.5 and protocol.steps == 10
    (tmp_path / "bad.yaml").write_text("steps: 10\ntemperature: 300\n")
    with pytest.raises(ValueError, match="temperature"):
        load_protocol(tmp_path / "bad.yaml")
