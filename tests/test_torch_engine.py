"""The torch MD engine: forces, NVE drift, replica independence, batches of molecules, thermostats."""

import numpy as np
import pytest
import torch
from ase import Atoms

from mlff.calculators.ase import MLFFCalculator
from mlff.dynamics import MDSettings
from mlff.dynamics.thermo import temperature_k, temperature_k_batch
from mlff.dynamics.torch_engine import TorchEngine
from mlff.export import load_potential
from mlff.units import EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2

pytestmark = pytest.mark.usefixtures("single_thread")

TETRAHEDRON = 1.2 / np.sqrt(8.0) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)


def h4(offset: float = 0.0) -> Atoms:
    return Atoms("H4", positions=TETRAHEDRON + offset * np.random.default_rng(0).normal(size=(4, 3)))


def run_states(engine: TorchEngine, steps: int) -> list:
    states = [engine.state]
    for _ in range(steps):
        engine.advance(1)
        states.append(engine.state)
    return states


def test_the_unit_constant_is_ev_per_angstrom_amu_in_angstrom_per_fs2():
    joule_per_ev, kg_per_amu = 1.602176634e-19, 1.66053906660e-27
    si = joule_per_ev / (1e-10 * kg_per_amu)  # m/s^2
    assert EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2 == pytest.approx(si * 1e10 / 1e30, rel=1e-8)


def test_step_zero_forces_equal_the_ase_calculator(spring_potential_file):
    atoms = h4(0.05)
    atoms.calc = MLFFCalculator(spring_potential_file)
    engine = TorchEngine(load_potential(spring_potential_file), [h4(0.05)] * 3, MDSettings())
    forces = engine.state.forces.reshape(3, 4, 3)
    for k in range(3):
        np.testing.assert_allclose(forces[k].numpy(), atoms.get_forces(), atol=1e-12)
        assert float(engine.state.potential_energy[k]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)


def test_nve_drift_is_measured_and_small(spring_potential_file):
    settings = MDSettings(timestep_fs=0.25, temperature_k=300.0, thermostat="nve")
    engine = TorchEngine(load_potential(spring_potential_file), [h4(), h4()], settings)
    states = run_states(engine, 400)
    totals = torch.stack([s.potential_energy + s.kinetic_energy() for s in states]).numpy()
    assert np.ptp(totals, axis=0).max() < 2e-3
    times = np.arange(len(states)) * settings.timestep_fs
    from mlff.dynamics.thermo import energy_drift_mev_per_ps_atom

    assert abs(energy_drift_mev_per_ps_atom(times, totals[:, 0], 4)) < 1.0
    assert np.ptp(torch.stack([s.temperature() for s in states]).numpy()) > 10.0, "the molecule moves"


def test_a_replica_batch_matches_the_replicas_run_one_by_one(potential_file, methanol, water):
    """A batch of molecules (methanol, water, methanol) equals each replica alone, seeded seed + k,
    over 1000 float64 Langevin steps within 1e-8 Angstrom."""
    systems = [Atoms(numbers=methanol[0], positions=methanol[1]), Atoms(numbers=water[0], positions=water[1])]
    systems.append(systems[0].copy())
    settings = MDSettings(timestep_fs=0.5, temperature_k=300.0, thermostat="langevin", friction_per_fs=0.02, seed=7)
    potential = load_potential(potential_file)
    batch = TorchEngine(potential, systems, settings)
    batch.advance(1000)
    together = batch.frame().positions_a
    for k, atoms in enumerate(systems):
        alone = TorchEngine(potential, [atoms], MDSettings(**{**settings.to_dict(), "seed": 7 + k}))
        alone.advance(1000)
        np.testing.assert_allclose(together[k], alone.frame().positions_a[0], rtol=0.0, atol=1e-8)
    assert np.abs(together[0] - together[2]).max() > 1e-3, "replicas 0 and 2 start alike but draw their own noise"


@pytest.mark.parametrize("thermostat", ["langevin", "nose-hoover"])
def test_thermostats_hold_the_target_temperature(spring_potential_file, thermostat):
    settings = MDSettings(timestep_fs=0.5, temperature_k=300.0, thermostat=thermostat, friction_per_fs=0.05, seed=1)
    engine = TorchEngine(load_potential(spring_potential_file), [h4()] * 8, settings)
    states = run_states(engine, 1200)
    temperatures = torch.stack([s.temperature() for s in states[200:]])
    assert abs(float(temperatures.mean()) / 300.0 - 1.0) < 0.1


def test_nose_hoover_thermostat_variable_responds_to_a_hot_start(spring_potential_file):
    settings = MDSettings(timestep_fs=0.5, temperature_k=30.0, thermostat="nose-hoover", ttime=20)
    engine = TorchEngine(load_potential(spring_potential_file), [h4()], settings)
    engine.state = type(engine.state)(**{**engine.state.__dict__, "velocities": engine.state.velocities * 4.5})
    engine.advance(50)
    assert float(engine.state.thermostat_xi[0]) > 0.0


def test_dropping_a_replica_leaves_the_others_unchanged(spring_potential_file):
    settings = MDSettings(thermostat="langevin", friction_per_fs=0.05, seed=3)
    potential = load_potential(spring_potential_file)
    full = TorchEngine(potential, [h4()] * 3, settings)
    dropped = TorchEngine(potential, [h4()] * 3, settings)
    full.advance(50)
    dropped.advance(50)
    dropped.drop([1])
    full.advance(50)
    dropped.advance(50)
    assert dropped.replicas == [0, 2]
    np.testing.assert_array_equal(dropped.frame().positions_a[1], full.frame().positions_a[2])


def test_an_exploding_replica_does_not_stop_the_batch(spring_potential_file):
    engine = TorchEngine(load_potential(spring_potential_file), [h4()] * 2, MDSettings(thermostat="nve"))
    positions = engine.state.positions.clone()
    positions[4:8] = float("nan")
    engine.state = type(engine.state)(**{**engine.state.__dict__, "positions": positions})
    engine.advance(5)
    frame = engine.frame()
    assert np.isfinite(frame.positions_a[0]).all() and not np.isfinite(frame.positions_a[1]).all()


def test_temperature_removes_each_systems_centre_of_mass_motion():
    masses = torch.tensor([1.0, 2.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1])
    velocities = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.01
    drift = torch.tensor([[0.3, -0.1, 0.2]] * 3 + [[-0.2, 0.5, 0.1]] * 2, dtype=torch.float64)
    both = temperature_k_batch(masses, velocities + drift, batch, 2)
    assert float(both[0]) == pytest.approx(temperature_k(masses[:3].numpy(), velocities[:3].numpy()), rel=1e-12)
    assert float(both[1]) == pytest.approx(temperature_k(masses[3:].numpy(), velocities[3:].numpy()), rel=1e-12)
    assert temperature_k(masses[:3].numpy(), drift[:3].numpy()) == pytest.approx(0.0, abs=1e-9)
