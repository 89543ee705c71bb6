"""Compiled potentials and the fast path: AOTInductor packages, the padded neighbour list,
compiled MD, torch-sim.

Compiling is slow on a loaded CPU (an AOTInductor package of the tiny model: minutes), so the
package is built once per module and its tests are marked slow; `gpu` tests need CUDA.
"""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import build_tiny_model, require_module, tiny_config
from geometry import random_molecules

from mlff.dynamics import MDSettings
from mlff.dynamics.compiled import CompiledForces, CompiledTorchEngine
from mlff.dynamics.torch_engine import TorchEngine
from mlff.export import export_model, load_potential
from mlff.export.deploy import eager_model_from_file
from mlff.export.load import PotentialError, is_potential_file, read_metadata
from mlff.models.neighbors import structure_pairs

pytestmark = pytest.mark.usefixtures("single_thread")

METHANOL = Atoms(
    numbers=[6, 8, 1, 1, 1, 1],
    positions=[
        [0.0, 0.0, 0.0],
        [1.43, 0.0, 0.0],
        [-0.36, 1.03, 0.0],
        [-0.36, -0.51, 0.89],
        [-0.36, -0.51, -0.89],
        [1.75, 0.90, 0.05],
    ],
)
WATER = Atoms(numbers=[8, 1, 1], positions=[[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.76, 0.0, -0.47]])


@pytest.mark.parametrize("backbone", ["egnn", "transformer", "et"])
def test_padded_pairs_give_the_forward_numbers(backbone: str) -> None:
    model = build_tiny_model(backbone=backbone).eval()
    arguments = random_molecules([9, 4, 12], seed=1)
    energy, forces = model(*arguments)
    candidates = structure_pairs(arguments[2], 3)
    _, _, count = model.energy_forces_padded(*arguments[:3], 3, candidates, candidates.size(1))
    # Spread-out molecules: a good share of the candidates lies beyond the cutoff.
    assert int(count) < 0.8 * candidates.size(1)
    for capacity in (candidates.size(1), int(count)):
        padded_energy, padded_forces, _ = model.energy_forces_padded(*arguments[:3], 3, candidates, capacity)
        torch.testing.assert_close(padded_energy, energy, rtol=0, atol=1e-10)
        torch.testing.assert_close(padded_forces, forces, rtol=0, atol=1e-10)
    # Too small a capacity drops pairs: the numbers change, and the count says so.
    small_energy, _, count = model.energy_forces_padded(*arguments[:3], 3, candidates, 10)
    assert int(count) > 10 and float((small_energy - energy).detach().abs().max()) > 1e-6


def test_unchecked_path_is_the_forward(potential_file: Path) -> None:
    potential = load_potential(potential_file)
    arguments = random_molecules([5, 7])
    potential.check_inputs(*arguments)
    checked = potential(*arguments)
    unchecked = potential(*arguments, check=False)
    torch.testing.assert_close(unchecked, checked, rtol=0, atol=0)
    bad = (arguments[0], torch.full_like(arguments[1], 92), *arguments[2:])
    with pytest.raises(ValueError, match="atomic number 92"):
        potential.check_inputs(*bad)


def test_eager_model_from_file_matches_the_file(potential_file: Path) -> None:
    arguments = random_molecules([6, 3])
    expected = load_potential(potential_file)(*arguments)
    torch.testing.assert_close(eager_model_from_file(potential_file)(*arguments), expected, rtol=0, atol=1e-12)


def test_foreign_and_corrupt_packages_are_clear_errors(tmp_path: Path, potential_file: Path) -> None:
    foreign = tmp_path / "foreign.pt2"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("model/data/aotinductor/model/x.wrapper.so", b"\0")
    assert is_potential_file(foreign)
    with pytest.raises(PotentialError, match="AOTInductor package without mlff_metadata.json"):
        load_potential(foreign)
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(potential_file.read_bytes()[:1000])
    with pytest.raises(PotentialError, match="truncated or corrupt"):
        load_potential(truncated)


def _tiny_settings(thermostat: str = "nve", **extra: object) -> MDSettings:
    return MDSettings(temperature_k=300.0, thermostat=thermostat, timestep_fs=0.5, seed=3, **extra)


@pytest.mark.slow
def test_traced_padded_engine_matches_the_torch_engine(potential_file: Path) -> None:
    potential = load_potential(potential_file)
    systems = [METHANOL, WATER, METHANOL]
    eager = TorchEngine(potential, systems, _tiny_settings("langevin", friction_per_fs=0.01))
    traced = CompiledTorchEngine(potential, systems, _tiny_settings("langevin", friction_per_fs=0.01), compile=False)
    eager.advance(20)
    traced.advance(20)
    torch.testing.assert_close(traced.state.positions, eager.state.positions, rtol=0, atol=1e-10)
    torch.testing.assert_close(traced.state.velocities, eager.state.velocities, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_capacity_overflow_grows_and_repeats_the_steps(potential_file: Path) -> None:
    potential = load_potential(potential_file)
    systems = [METHANOL, METHANOL]
    eager = TorchEngine(potential, systems, _tiny_settings())
    small = CompiledTorchEngine(potential, systems, _tiny_settings(), capacity=8, compile=False)
    eager.advance(5)
    small.advance(5)
    assert small.capacity > 8
    torch.testing.assert_close(small.state.positions, eager.state.positions, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_compiled_engine_matches_eager_over_100_float64_steps(potential_file: Path) -> None:
    """One torch.compile of the tiny model's padded graph (~1-3 min on a loaded 2-core machine)."""
    potential = load_potential(potential_file)
    systems = [METHANOL, WATER]
    eager = TorchEngine(potential, systems, _tiny_settings())
    compiled = CompiledTorchEngine(potential, systems, _tiny_settings())
    assert isinstance(compiled.force_fn, CompiledForces) and compiled.force_fn.compile
    eager.advance(1)
    compiled.advance(1)
    torch.testing.assert_close(compiled.state.forces, eager.state.forces, rtol=0, atol=1e-9)
    eager.advance(99)
    compiled.advance(99)
    torch.testing.assert_close(compiled.state.positions, eager.state.positions, rtol=0, atol=1e-8)


@pytest.fixture(scope="module")
def aoti_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny float64 model as a CPU AOTInductor package (one compile: minutes on a loaded machine)."""
    path = tmp_path_factory.mktemp("aoti") / "tiny.pt2"
    return export_model(build_tiny_model(), path, {"note": "test"}, config=tiny_config(), format="aoti")


@pytest.mark.slow
def test_aoti_package_equals_eager_on_other_sizes(aoti_package: Path) -> None:
    model = build_tiny_model().eval()
    potential = load_potential(aoti_package)
    metadata = read_metadata(aoti_package)
    assert metadata["container"] == "aoti" and metadata["note"] == "test" and not metadata["periodic"]
    assert metadata["aoti"] == {"device": "cpu", "torch_version": torch.__version__}
    for sizes in ([3], [11, 5, 2], [30]):
        arguments = random_molecules(sizes, seed=len(sizes))
        energy, forces = potential(*arguments)
        expected_energy, expected_forces = model(*arguments)
        torch.testing.assert_close(energy, expected_energy, rtol=0, atol=1e-10)
        torch.testing.assert_close(forces, expected_forces, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="not among the potential's species"):
        potential(arguments[0], torch.full_like(arguments[1], 92), *arguments[2:])
    periodic = (*arguments[:4], torch.ones_like(arguments[4]))
    with pytest.raises(ValueError, match="isolated molecules only"):
        potential(*periodic)


@pytest.mark.slow
def test_aoti_package_for_another_device_or_torch_is_refused(aoti_package: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(aoti_package) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    for key, value, message in (("device", "cuda", "compiled for 'cuda'"), ("torch_version", "2.0.0", "torch 2.0.0")):
        name = next(name for name in entries if name.endswith("mlff_metadata.json"))
        metadata = read_metadata(aoti_package)
        metadata["aoti"][key] = value
        changed = tmp_path / f"{key}.pt2"
        with zipfile.ZipFile(changed, "w") as archive:
            for entry, data in entries.items():
                archive.writestr(entry, __import__("json").dumps(metadata) if entry == name else data)
        with pytest.raises(PotentialError, match=message):
            load_potential(changed)


@pytest.mark.slow
def test_torch_engine_runs_the_aoti_package(aoti_package: Path, potential_file: Path) -> None:
    systems = [METHANOL, WATER]
    eager = TorchEngine(load_potential(potential_file), systems, _tiny_settings())
    packaged = TorchEngine(load_potential(aoti_package), systems, _tiny_settings())
    eager.advance(10)
    packaged.advance(10)
    torch.testing.assert_close(packaged.state.positions, eager.state.positions, rtol=0, atol=1e-10)


def test_torch_sim_nve_trajectory_matches_the_torch_engine(potential_file: Path) -> None:
    require_module("torch_sim")
    from mlff.dynamics.torchsim import TorchSimEngine

    potential = load_potential(potential_file)
    systems = [METHANOL, WATER]
    ours = TorchEngine(potential, systems, _tiny_settings())
    theirs = TorchSimEngine(potential, systems, _tiny_settings())
    torch.testing.assert_close(theirs.velocities(), ours.state.velocities, rtol=0, atol=1e-12)
    ours.advance(20)
    theirs.advance(20)
    torch.testing.assert_close(theirs.state.positions, ours.state.positions, rtol=0, atol=1e-9)
    torch.testing.assert_close(theirs.velocities(), ours.state.velocities, rtol=0, atol=1e-9)
    np.testing.assert_allclose(theirs.frame().potential_energy_ev, ours.frame().potential_energy_ev, atol=1e-9)


@pytest.mark.gpu
def test_compiled_md_step_does_not_synchronise_on_cuda(potential_file: Path) -> None:
    """Steps under torch.cuda.set_sync_debug_mode("error") raise on any host synchronisation."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    potential = load_potential(potential_file, device="cuda")
    engine = CompiledTorchEngine(potential, [METHANOL] * 4, _tiny_settings("langevin", friction_per_fs=0.01))
    engine.advance(3)  # compile and capture before watching
    step, state = engine.step_fn, engine.state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            state = step(state)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_compiled_engine_runs_a_file_without_check_inputs_on_cuda() -> None:
    """Format v1 files (aspirin's shipped one among them) have no exported `check_inputs` method, so the
    engine's one set-up check runs the whole module: on its device (an H200 run found the replicas'
    CPU tensors passed to it)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    potential = load_potential(Path(__file__).parent / "data" / "legacy" / "potential.pt", device="cuda")
    assert not potential._has_method("check_inputs")
    engine = CompiledTorchEngine(potential, [METHANOL] * 2, _tiny_settings("langevin", friction_per_fs=0.01))
    engine.advance(2)
    assert torch.isfinite(engine.state.positions).all()


def test_openmm_torch_force_refuses_an_aoti_package_by_name(potential_file: Path) -> None:
    from mlff.calculators.openmm import torch_force_module

    potential = load_potential(potential_file)
    potential.metadata = {**potential.metadata, "container": "aoti"}
    with pytest.raises(ValueError, match="AOTInductor package.*TorchScript"):
        torch_force_module(potential, [8, 1, 1])
