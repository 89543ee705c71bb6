"""The torch MD engine: forces, NVE drift, replica independence, thermostats, `mlff md --engine torch`."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from mlff.calculators.ase import MLFFCalculator
from mlff.cli.main import main
from mlff.dynamics import MDSettings, StabilityObserver, run_md, run_torch_md
from mlff.dynamics.torch_engine import (
    BatchedPotential,
    init_state,
    make_step,
    masses_of,
    replica_generators,
)
from mlff.export import load_potential
from mlff.units import EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2

pytestmark = pytest.mark.usefixtures("single_thread")

TETRAHEDRON = 1.2 / np.sqrt(8.0) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
NUMBERS = torch.ones(4, dtype=torch.long)


def trajectory(potential_file, settings: MDSettings, seed: int, replicas: int) -> tuple[torch.Tensor, list]:
    """Positions [R, 4, 3] after `settings.steps` steps and the states after each step."""
    force_fn = BatchedPotential(load_potential(potential_file), NUMBERS, replicas)
    generators = replica_generators(seed, replicas)
    state = init_state(force_fn, torch.as_tensor(TETRAHEDRON), masses_of(NUMBERS), settings.temperature_k, generators)
    step = make_step(settings, force_fn, generators)
    states = [state]
    for _ in range(settings.steps):
        states.append(step(states[-1]))
    return states[-1].positions, states


def test_the_unit_constant_is_ev_per_angstrom_amu_in_angstrom_per_fs2():
    joule_per_ev, kg_per_amu = 1.602176634e-19, 1.66053906660e-27
    si = joule_per_ev / (1e-10 * kg_per_amu)  # m/s^2
    assert EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 == pytest.approx(si * 1e10 / 1e30, rel=1e-8)


def test_step_zero_forces_equal_the_ase_calculator(spring_potential_file):
    positions = TETRAHEDRON + np.random.default_rng(0).normal(scale=0.05, size=(4, 3))
    atoms = Atoms("H4", positions=positions, calculator=MLFFCalculator(spring_potential_file))
    force_fn = BatchedPotential(load_potential(spring_potential_file), NUMBERS, 3)
    state = init_state(force_fn, torch.as_tensor(positions), masses_of(NUMBERS), 300.0, replica_generators(0, 3))
    for k in range(3):
        np.testing.assert_allclose(state.forces[k].numpy(), atoms.get_forces(), atol=1e-12)
        assert float(state.potential_energy[k]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    assert state.forces.shape == (3, 4, 3) and state.potential_energy.shape == (3,)


def test_nve_conserves_energy(spring_potential_file):
    settings = MDSettings(steps=400, timestep_fs=0.25, temperature_k=300.0, thermostat="nve")
    _, states = trajectory(spring_potential_file, settings, seed=0, replicas=2)
    totals = torch.stack([s.potential_energy + s.kinetic_energy() for s in states]).numpy()
    assert np.ptp(totals, axis=0).max() < 2e-3
    np.testing.assert_array_equal(states[0].positions[1].numpy(), TETRAHEDRON)
    measures = run_torch_md(load_potential(spring_potential_file), NUMBERS, torch.as_tensor(TETRAHEDRON), settings, 2)
    assert abs(measures["energy_drift_mev_per_ps_atom"]) < 1.0
    assert measures["steps"] == 400 and 0.0 < measures["potential_time_fraction"] <= 1.0


def test_a_replica_batch_matches_the_replicas_run_one_by_one(spring_potential_file):
    settings = MDSettings(steps=300, timestep_fs=0.5, temperature_k=300.0, thermostat="langevin", friction_per_fs=0.02)
    batch, _ = trajectory(spring_potential_file, settings, seed=7, replicas=3)
    for k in range(3):
        alone, _ = trajectory(spring_potential_file, settings, seed=7 + k, replicas=1)
        assert torch.allclose(batch[k], alone[0], rtol=0.0, atol=1e-8)
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)


@pytest.mark.parametrize(
    "thermostat, bound", [("langevin", 0.1), ("nose-hoover", 0.1)], ids=["langevin", "nose-hoover"]
)
def test_thermostats_hold_the_target_temperature(spring_potential_file, thermostat, bound):
    settings = MDSettings(
        steps=1200, timestep_fs=0.5, temperature_k=300.0, thermostat=thermostat, friction_per_fs=0.05, ttime=20
    )
    _, states = trajectory(spring_potential_file, settings, seed=1, replicas=8)
    temperatures = torch.stack([s.temperature() for s in states[200:]])
    assert abs(float(temperatures.mean()) / 300.0 - 1.0) < bound


def test_nose_hoover_thermostat_variable_responds_to_a_hot_start(spring_potential_file):
    settings = MDSettings(steps=50, timestep_fs=0.5, temperature_k=30.0, thermostat="nose-hoover", ttime=20)
    force_fn = BatchedPotential(load_potential(spring_potential_file), NUMBERS, 1)
    generators = replica_generators(0, 1)
    state = init_state(force_fn, torch.as_tensor(TETRAHEDRON), masses_of(NUMBERS), 600.0, generators)
    step = make_step(settings, force_fn, generators)
    for _ in range(settings.steps):
        state = step(state)
    assert float(state.thermostat_xi[0]) > 0.0


def test_collapsed_replicas_are_reported_and_the_run_stops(spring_potential_file):
    potential = load_potential(spring_potential_file)
    numbers = torch.ones(2, dtype=torch.long)
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]], dtype=torch.float64)
    observers = [[StabilityObserver(np.array([[0, 1]]), np.array([0.9]))] for _ in range(2)]
    settings = MDSettings(steps=2000, timestep_fs=0.5, temperature_k=50000.0, save_every=5)
    measures = run_torch_md(potential, numbers, positions, settings, 2, observers)
    assert all(group[0].collapsed for group in observers)
    assert measures["steps"] < 2000


def test_run_md_torch_engine_reports_replicas(spring_potential_file, tmp_path):
    write(tmp_path / "h4.xyz", Atoms("H4", positions=TETRAHEDRON))
    settings = MDSettings(steps=40, timestep_fs=0.25, thermostat="nose-hoover", save_every=10)
    structure = str(tmp_path / "h4.xyz")
    summary = run_md(spring_potential_file, structure, settings, tmp_path / "md", engine="torch", replicas=3)
    assert summary["engine"] == "torch" and summary["stability"]["replicas"] == 3
    assert summary["stability"]["collapsed_replicas"] == [] and len(summary["stability"]["per_replica"]) == 3
    assert summary["throughput"]["atom_steps_per_second"] == pytest.approx(
        summary["throughput"]["steps_per_second"] * 12
    )
    thermo = np.loadtxt(tmp_path / "md" / "thermo.csv", delimiter=",", skiprows=1)
    assert thermo.shape == (12, 6)
    with pytest.raises(ValueError, match="one replica"):
        run_md(spring_potential_file, str(tmp_path / "h4.xyz"), settings, engine="ase", replicas=2)


def test_ase_engine_runs_nose_hoover(spring_potential_file, tmp_path):
    write(tmp_path / "h4.xyz", Atoms("H4", positions=TETRAHEDRON))
    settings = MDSettings(steps=40, timestep_fs=0.25, thermostat="nose-hoover", save_every=10)
    summary = run_md(spring_potential_file, str(tmp_path / "h4.xyz"), settings)
    assert summary["stability"]["collapsed"] is False and summary["throughput"]["steps"] == 40


def test_md_command_with_the_torch_engine(spring_potential_file, tmp_path, capsys):
    write(tmp_path / "h4.xyz", Atoms("H4", positions=TETRAHEDRON))
    args = ["md", str(spring_potential_file), "--structure", str(tmp_path / "h4.xyz"), "--steps", "40"]
    code = main([*args, "--save-every", "10", "--engine", "torch", "--replicas", "2"])
    output = capsys.readouterr().out
    assert code == 0
    assert "torch engine, 2 replica(s)" in output and "stability: stable" in output and "steps/s" in output


def test_temperature_matches_the_numpy_definition():
    from mlff.dynamics.thermo import temperature_k, temperature_k_batch

    masses = np.array([1.0, 2.0, 3.0])
    velocities = np.random.default_rng(0).normal(size=(2, 3, 3)) * 0.01
    batch = temperature_k_batch(torch.as_tensor(masses), torch.as_tensor(velocities))
    ase_velocities = velocities / np.sqrt(EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2)
    for k in range(2):
        assert float(batch[k]) == pytest.approx(temperature_k(masses, ase_velocities[k]), rel=1e-12)
