"""Force-centric training: equilibrium frames, the loss terms, mixed molecules, fine-tuning."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import build_tiny_model
from synthetic import (
    EQUILIBRIUM,
    NUMBERS,
    TINY_TRAINING_OVERRIDES,
    harmonic_energy_forces,
    make_frames,
    write_md17_npz,
)
from torch import nn

import mlff.training.trainer as trainer_module
from mlff.checkpoint import load_checkpoint, load_init
from mlff.data import DatasetError, Frames, read_frames
from mlff.data.batch import Batch, FrameTensors
from mlff.export.committee import export_committee
from mlff.export.deploy import export_checkpoint
from mlff.training import ConfigError, load_config, train
from mlff.training.dataset import load_training_data
from mlff.training.finetune import FITTED_BUFFERS, load_pretrained_weights, pretrained_model
from mlff.training.losses import (
    LOSSES,
    LossInputs,
    LossSettings,
    denoising,
    energy_mse,
    force_mae,
    force_mse,
    harmonic_restoring_force,
    project_out_rigid_motions,
    rigid_body_modes,
    total_loss,
    zero_force,
)
from mlff.training.references import fit_element_energies
from mlff.units import BOLTZMANN_EV_PER_K, KCAL_PER_MOL_TO_EV

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = TINY_TRAINING_OVERRIDES
FORCE_CENTRIC = [
    "train.loss_weights.zero_force=100",
    "train.loss_weights.denoising=10",
    "train.loss_weights.smoothness=0.01",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    """Tiny models run much faster on one thread of a busy machine."""


def make_batch(sizes, equilibrium, has_energy=None, seed=0, dtype=torch.float64) -> Batch:
    """A hand-made batch of structures of the given sizes with random labels."""
    generator = torch.Generator().manual_seed(seed)
    n_atoms = torch.tensor(sizes)
    total = int(n_atoms.sum())
    count = len(sizes)
    return Batch(
        positions=torch.randn(total, 3, generator=generator, dtype=dtype) * 1.5,
        atomic_numbers=torch.tensor(([6, 1, 1, 8, 1, 1, 1] * total)[:total]),
        batch=torch.repeat_interleave(torch.arange(count), n_atoms),
        cell=torch.zeros(count, 3, 3, dtype=dtype),
        pbc=torch.zeros(count, 3, dtype=torch.bool),
        energies=torch.randn(count, generator=generator, dtype=torch.float64),
        forces=torch.randn(total, 3, generator=generator, dtype=dtype),
        n_atoms=n_atoms,
        equilibrium=torch.tensor(equilibrium),
        has_energy=None if has_energy is None else torch.tensor(has_energy),
    )


class ExactWell(nn.Module):
    """The denoising term's own harmonic well around fixed minima: E = (k_B T / 2 sigma^2) |P (x - x0)|^2.

    P removes the rigid-body motions of x0, so its forces at x0 + eps (eps already
    projected) are exactly the denoising target: a model the term must score 0.
    """

    def __init__(self, minima: torch.Tensor, batch: torch.Tensor, settings: LossSettings) -> None:
        super().__init__()
        self.minima, self.batch_index = minima, batch
        self.stiffness = BOLTZMANN_EV_PER_K * settings.denoising_temperature_k / settings.denoising_sigma**2

    def forward(self, positions, atomic_numbers, batch, cell, pbc):
        assert torch.equal(batch, self.batch_index) and positions.shape == self.minima.shape
        positions = positions.detach().requires_grad_(True)
        displacement = project_out_rigid_motions(positions - self.minima, self.minima, batch, cell.size(0))
        per_atom = 0.5 * self.stiffness * displacement.pow(2).sum(dim=1)
        energy = torch.zeros(cell.size(0), dtype=torch.float64).index_add(0, batch, per_atom)
        (gradient,) = torch.autograd.grad(energy.sum(), positions)
        return energy, -gradient


class NoForces(nn.Module):
    """A model whose forces vanish everywhere."""

    def forward(self, positions, atomic_numbers, batch, cell, pbc):
        return torch.zeros(cell.size(0), dtype=torch.float64), torch.zeros_like(positions)


# --- loss terms on hand-made tensors -------------------------------------------------------------


def test_energy_loss_uses_only_frames_with_an_energy_label():
    batch = make_batch([3, 4, 2], [False, True, False], has_energy=[True, False, True])
    predicted = batch.energies + torch.tensor([0.5, 100.0, -1.5], dtype=torch.float64)
    inputs = LossInputs(None, batch, predicted, batch.forces)
    assert float(energy_mse(inputs)) == pytest.approx((0.5**2 + 1.5**2) / 2)
    batch.has_energy[:] = False
    assert float(energy_mse(inputs)) == 0.0


def test_force_loss_ignores_equilibrium_frames():
    batch = make_batch([3, 4, 2], [False, True, False])
    predicted = batch.forces + 0.1
    value = float(force_mse(LossInputs(None, batch, batch.energies, predicted)))
    assert value == pytest.approx(0.01)
    wild = predicted.clone()
    wild[3:7] = 1e3
    assert float(force_mse(LossInputs(None, batch, batch.energies, wild))) == pytest.approx(0.01)
    batch.equilibrium[:] = True
    assert float(force_mse(LossInputs(None, batch, batch.energies, predicted))) == 0.0


def test_force_mae_term_is_the_mean_absolute_error_on_off_equilibrium_frames():
    batch = make_batch([3, 4, 2], [False, True, False])
    predicted = batch.forces.clone()
    predicted[:3] += 0.3
    predicted[7:] -= 0.1
    predicted[3:7] = 1e3
    expected = (9 * 0.3 + 6 * 0.1) / 15
    assert float(force_mae(LossInputs(None, batch, batch.energies, predicted))) == pytest.approx(expected)
    assert LOSSES["forces_mae"] is force_mae
    batch.equilibrium[:] = True
    assert float(force_mae(LossInputs(None, batch, batch.energies, predicted))) == 0.0


def test_zero_force_term_is_the_mean_square_force_on_equilibrium_frames():
    batch = make_batch([3, 4, 2], [False, True, False])
    predicted = torch.randn(9, 3, dtype=torch.float64)
    expected = float(predicted[3:7].pow(2).mean())
    assert float(zero_force(LossInputs(None, batch, batch.energies, predicted))) == pytest.approx(expected)
    batch.equilibrium[:] = False
    assert float(zero_force(LossInputs(None, batch, batch.energies, predicted))) == 0.0


def test_zero_force_term_vanishes_for_a_harmonic_model_at_its_minimum():
    settings = LossSettings()
    minima = torch.tensor(EQUILIBRIUM, dtype=torch.float64)
    index = torch.zeros(5, dtype=torch.long)
    model = ExactWell(minima, index, settings)
    _, forces = model(minima, None, index, torch.zeros(1, 3, 3), None)
    batch = make_batch([5], [True])
    batch.positions = minima
    assert float(zero_force(LossInputs(model, batch, batch.energies, forces))) < 1e-20
    displaced_positions = minima + 0.05 * torch.randn(5, 3, dtype=torch.float64)
    _, displaced = model(displaced_positions, None, index, torch.zeros(1, 3, 3), None)
    assert float(zero_force(LossInputs(model, batch, batch.energies, displaced))) > 1e-3


def _molecules(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random x0 of three structures (7 atoms, 4 atoms, and a linear 3-atom one) and their batch index."""
    rng = np.random.default_rng(seed)
    linear = np.outer([-1.2, 0.1, 1.3], rng.standard_normal(3)) + rng.standard_normal(3)
    positions = np.concatenate([2.0 * rng.standard_normal((7, 3)), 1.5 * rng.standard_normal((4, 3)), linear])
    batch = torch.tensor([0] * 7 + [1] * 4 + [2] * 3)
    noise = 0.04 * rng.standard_normal(positions.shape)
    return torch.tensor(positions), torch.tensor(noise), batch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_noise_is_orthogonal_to_translations_and_rotations(seed):
    x0, eps, batch = _molecules(seed)
    projected = project_out_rigid_motions(eps, x0, batch, 3)
    modes = rigid_body_modes(x0, batch, 3)
    overlaps = torch.zeros(3, 6, dtype=torch.float64).index_add(0, batch, torch.einsum("nai,na->ni", modes, projected))
    assert float(overlaps.abs().max()) < 1e-12
    torch.testing.assert_close(project_out_rigid_motions(projected, x0, batch, 3), projected, rtol=0, atol=1e-14)
    # A rigid motion (translation + infinitesimal rotation) is removed entirely.
    rigid = torch.einsum("nai,ni->na", modes, torch.randn(3, 6, dtype=torch.float64)[batch])
    assert float(project_out_rigid_motions(rigid, x0, batch, 3).abs().max()) < 1e-12
    # The removed space has 6 dimensions for the 3D structures and 5 for the linear one.
    basis = torch.eye(42, dtype=torch.float64).reshape(42, 14, 3)
    projector = torch.stack([project_out_rigid_motions(v, x0, batch, 3).reshape(-1) for v in basis])
    atoms = {0: slice(0, 21), 1: slice(21, 33), 2: slice(33, 42)}
    ranks = [round(float(torch.trace(projector[a, a]))) for a in atoms.values()]
    assert ranks == [21 - 6, 12 - 6, 9 - 5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_denoising_target_is_the_harmonic_force_with_no_net_force_or_torque(seed):
    x0, eps, batch = _molecules(seed)
    sigma, temperature = 0.04, 300.0
    projected = project_out_rigid_motions(eps, x0, batch, 3)
    target = harmonic_restoring_force(projected, sigma, temperature)
    torch.testing.assert_close(target, -BOLTZMANN_EV_PER_K * temperature * projected / sigma**2, rtol=1e-15, atol=0)
    masses = torch.tensor([12.0, 1.0, 16.0, 14.0, 1.0, 1.0, 12.0, 1.0, 1.0, 16.0, 12.0, 12.0, 1.0, 16.0])
    for structure in range(3):
        atoms = batch == structure
        force, position = target[atoms], x0[atoms]
        assert float(force.sum(0).abs().max()) < 1e-10
        centre = (masses[atoms, None] * position).sum(0) / masses[atoms].sum()
        for where in (position, position + projected[atoms]):
            torque = torch.linalg.cross(where - centre, force, dim=1).sum(0)
            assert float(torque.abs().max()) < 1e-10


def test_denoising_scores_the_exact_well_zero_and_a_force_free_model_the_target_power():
    settings = LossSettings(denoising_sigma=0.05, denoising_temperature_k=500.0)
    batch = make_batch([4, 5, 3, 6], [False, True, False, True])
    atoms = batch.equilibrium[batch.batch]
    minima = batch.positions[atoms]
    sub_batch = torch.tensor([0] * 5 + [1] * 6)
    well = ExactWell(minima, sub_batch, settings)
    inputs = LossInputs(well, batch, batch.energies, batch.forces, settings, torch.Generator().manual_seed(7))
    assert float(denoising(inputs)) < 1e-20
    # The noise is the seeded generator's Gaussian of scale sigma, projected.
    seeded = torch.Generator().manual_seed(7)
    noise = settings.denoising_sigma * torch.randn(11, 3, generator=seeded, dtype=torch.float64)
    target = harmonic_restoring_force(
        project_out_rigid_motions(noise, minima, sub_batch, 2), settings.denoising_sigma, 500.0
    )
    still = LossInputs(NoForces(), batch, batch.energies, batch.forces, settings, torch.Generator().manual_seed(7))
    assert float(denoising(still)) == pytest.approx(float(target.pow(2).mean()), rel=1e-12)
    other = LossInputs(NoForces(), batch, batch.energies, batch.forces, settings, torch.Generator().manual_seed(8))
    assert float(denoising(other)) != pytest.approx(float(target.pow(2).mean()), rel=1e-6)
    batch.equilibrium[:] = False
    assert float(denoising(still)) == 0.0


def test_every_term_is_registered_and_reported_by_total_loss():
    assert {"energy", "forces", "zero_force", "denoising", "smoothness"} <= set(LOSSES)
    model = build_tiny_model().train()
    batch = make_batch([5, 3], [False, True])
    energy, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
    weights = {"energy": 1.0, "forces": 100.0, "zero_force": 100.0, "denoising": 10.0, "smoothness": 0.01}
    loss, parts = total_loss(weights, model, batch, energy, forces, LossSettings(), torch.Generator().manual_seed(0))
    assert set(parts) == set(weights)
    assert float(loss.detach()) == pytest.approx(sum(weights[k] * parts[k] for k in weights), rel=1e-9)
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


# --- data: the equilibrium flag, mixed molecules ---------------------------------------------------


def _extxyz_frames(path: Path, num_off: int = 6, num_minima: int = 3, method: str = "GFN2-xTB") -> Path:
    """The generator's extxyz contract: the synthetic molecule's MD-like frames and rotated copies of its minimum."""
    images = []
    for r, e, f in zip(*make_frames(num_off, seed=4)) if num_off else ():
        atoms = Atoms(numbers=NUMBERS, positions=r)
        atoms.calc = SinglePointCalculator(atoms, energy=e * KCAL_PER_MOL_TO_EV, forces=f * KCAL_PER_MOL_TO_EV)
        atoms.info.update(equilibrium=False, method=method, molecule="mol", source="md", temperature_k=500.0)
        images.append(atoms)
    energy, _ = harmonic_energy_forces(EQUILIBRIUM)
    for k in range(num_minima):
        atoms = Atoms(numbers=NUMBERS, positions=EQUILIBRIUM)
        atoms.rotate(37.0 * k, "z")
        atoms.translate([0.3 * k, 0.0, -0.2])
        atoms.calc = SinglePointCalculator(atoms, energy=energy * KCAL_PER_MOL_TO_EV, forces=np.zeros((5, 3)))
        atoms.info.update(equilibrium=True, method=method, molecule="mol", source="opt", temperature_k=0.0)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def test_the_equilibrium_flag_round_trips_through_extxyz(tmp_path):
    path = _extxyz_frames(tmp_path / "corpus.extxyz")
    minimum = Atoms(numbers=[8, 1, 1], positions=[[0, 0, 0.1], [0.76, 0, -0.47], [-0.76, 0, -0.47]])
    minimum.info.update(equilibrium=True, molecule="water")
    ase.io.write(path, minimum, format="extxyz", append=True)
    frames = read_frames(path)
    assert frames.equilibrium.tolist() == [False] * 6 + [True] * 4
    assert frames.has_energy.tolist() == [True] * 9 + [False]
    assert frames.extra["method"].tolist() == ["GFN2-xTB"] * 9 + [""]
    assert frames.extra["molecule"].tolist()[-1] == "water"
    np.testing.assert_allclose(frames.forces[-3:], 0.0)
    everything = read_frames(tmp_path / "corpus.extxyz", equilibrium=True)
    assert everything.equilibrium.all()
    subset = frames.subset(np.array([8, 0, 9]))
    assert subset.equilibrium.tolist() == [True, False, True] and subset.has_energy.tolist() == [True, True, False]


def test_npz_frames_are_off_equilibrium_unless_declared_minima(tmp_path):
    path = write_md17_npz(tmp_path / "mol.npz", num_frames=6)
    assert not read_frames(path).equilibrium.any()
    assert read_frames(path, equilibrium=True).equilibrium.all()


def _mixed_frames() -> Frames:
    """Four molecules of different sizes and elements (labels are placeholders)."""
    rng = np.random.default_rng(3)
    molecules = [[8, 1, 1], [6, 8, 1, 1, 1, 1], [6, 1, 1, 1, 1], [6, 6, 8, 1, 1, 1, 1, 1, 1]]
    numbers = np.concatenate(molecules)
    # Each molecule a zig-zag chain of 0.9-1.3 A steps: no two atoms closer than about 1 A.
    steps = [rng.uniform(0.9, 1.3, (len(m), 3)) * [1.0, 0.3, 0.2] for m in molecules]
    positions = np.concatenate([np.cumsum(step, axis=0) for step in steps])
    return Frames(
        positions=positions,
        atomic_numbers=numbers,
        n_atoms=[len(m) for m in molecules],
        energies=rng.standard_normal(len(molecules)),
        forces=np.zeros((len(numbers), 3)),
    )


@pytest.mark.parametrize("backbone", ["egnn", "et"])
def test_a_mixed_batch_equals_one_by_one_evaluation(backbone):
    model = build_tiny_model(backbone=backbone)
    data = FrameTensors(_mixed_frames(), torch.float64)
    batch = data.batch(np.arange(4))
    energy, forces = model(batch.positions, batch.atomic_numbers, batch.batch, batch.cell, batch.pbc)
    for k in range(4):
        one = data.batch(np.array([k]))
        e, f = model(one.positions, one.atomic_numbers, one.batch, one.cell, one.pbc)
        torch.testing.assert_close(energy[k : k + 1], e, rtol=0, atol=1e-10)
        torch.testing.assert_close(forces[batch.batch == k], f, rtol=0, atol=1e-10)


def test_references_of_mixed_molecules_skip_frames_without_an_energy_label():
    frames = _mixed_frames()
    truth = np.array([-13.6, -1030.0, -2040.0])
    frames.energies = frames.composition([1, 6, 8]) @ truth
    frames.energies[1] = 0.0
    frames.has_energy[1] = False
    np.testing.assert_allclose(fit_element_energies(frames, np.arange(4), [1, 6, 8]), truth, rtol=1e-10)
    frames.has_energy[:] = False
    assert fit_element_energies(frames, np.arange(4), [1, 6, 8]) == [0.0, 0.0, 0.0]


def test_equilibrium_file_joins_training_only_and_energy_labels_follow_the_config(tmp_path):
    base = write_md17_npz(tmp_path / "mol.npz", num_frames=20)
    minima = _extxyz_frames(tmp_path / "minima.extxyz", num_off=0, num_minima=3, method="PBE")
    config = load_config(None, [f"data.path={base}", f"data.equilibrium_path={minima}", "data.n_val=2"])
    data = load_training_data(config.data)
    assert data.frames.num_frames == 23 and data.base_frames.num_frames == 20
    assert set(range(20, 23)) <= set(data.split.train.tolist())
    assert not set(range(20, 23)) & set(data.split.val.tolist() + data.split.test.tolist())
    assert data.split.val.tolist() == data.base_split.val.tolist()
    assert data.frames.equilibrium.tolist() == [False] * 20 + [True] * 3
    assert data.frames.has_energy.tolist() == [True] * 20 + [False] * 3
    with_energies = load_training_data(load_config(None, [*_overrides(config), "data.equilibrium_energies=true"]).data)
    assert with_energies.frames.has_energy.all()
    none = load_training_data(load_config(None, [*_overrides(config), "data.energy_consistent=false"]).data)
    assert not none.frames.has_energy.any()


def test_equilibrium_repeat_puts_each_minimum_that_many_times_in_training_only(tmp_path):
    base = write_md17_npz(tmp_path / "mol.npz", num_frames=20)
    minima = _extxyz_frames(tmp_path / "minima.extxyz", num_off=0, num_minima=2, method="PBE")
    overrides = [f"data.path={base}", f"data.equilibrium_path={minima}", "data.n_val=2"]
    once = load_training_data(load_config(None, overrides).data)
    thrice = load_training_data(load_config(None, [*overrides, "data.equilibrium_repeat=3"]).data)
    train = thrice.split.train.tolist()
    assert [train.count(i) for i in (20, 21)] == [3, 3]
    assert thrice.split.train.size == once.split.train.size + 4
    assert thrice.split.val.tolist() == once.split.val.tolist()
    assert thrice.split.test.tolist() == once.split.test.tolist()
    with pytest.raises(ConfigError, match="equilibrium_repeat"):
        load_config(None, [*overrides, "data.equilibrium_repeat=0"])


def test_equilibrium_repeat_leaves_the_fitted_reference_energies_unchanged(tmp_path):
    base = write_md17_npz(tmp_path / "mol.npz", num_frames=20)
    minima = _extxyz_frames(tmp_path / "minima.extxyz", num_off=0, num_minima=2, method="PBE")
    overrides = [f"data.path={base}", f"data.equilibrium_path={minima}", "data.n_val=2"]
    overrides.append("data.equilibrium_energies=true")
    energies = []
    for repeat in (1, 50):
        config = load_config(None, [*overrides, f"data.equilibrium_repeat={repeat}"])
        data = load_training_data(config.data)
        model = trainer_module.initial_model(config, data.frames, data.split)
        energies.append(model.element_energies().detach().clone())
    torch.testing.assert_close(energies[0], energies[1])


def _overrides(config) -> list[str]:
    return [f"data.path={config.data.path}", f"data.equilibrium_path={config.data.equilibrium_path}", "data.n_val=2"]


def test_energies_of_two_methods_are_refused_unless_one_is_chosen(tmp_path):
    path = tmp_path / "mixed.extxyz"
    _extxyz_frames(tmp_path / "a.extxyz", num_off=6, num_minima=0, method="GFN2-xTB")
    _extxyz_frames(tmp_path / "b.extxyz", num_off=6, num_minima=2, method="PBE")
    ase.io.write(path, ase.io.read(tmp_path / "a.extxyz", ":") + ase.io.read(tmp_path / "b.extxyz", ":"))
    overrides = [f"data.path={path}", "data.n_val=2", "data.n_test=2"]
    with pytest.raises(DatasetError, match="GFN2-xTB.*PBE"):
        load_training_data(load_config(None, overrides).data)
    chosen = load_training_data(load_config(None, [*overrides, "data.energy_method=PBE"]).data)
    assert chosen.frames.has_energy.tolist() == [False] * 6 + [True] * 8
    dropped = load_training_data(load_config(None, [*overrides, "data.energy_consistent=false"]).data)
    assert not dropped.frames.has_energy.any()


# --- the trainer: force-centric runs, resume, fine-tuning ----------------------------------------


def test_energy_errors_leave_out_frames_without_an_energy_label():
    from mlff.evaluate import evaluate

    frames = _mixed_frames()
    model = build_tiny_model()
    everything = evaluate(model, FrameTensors(frames, torch.float64), np.arange(4), 8)
    frames.energies[2] = 1e6
    frames.has_energy[2] = False
    metrics = evaluate(model, FrameTensors(frames, torch.float64), np.arange(4), 8)
    labelled = evaluate(model, FrameTensors(frames, torch.float64), np.array([0, 1, 3]), 8)
    assert metrics["energy_mae_mev"] == labelled["energy_mae_mev"] != everything["energy_mae_mev"]
    assert metrics["force_mae_mev_per_a"] == everything["force_mae_mev_per_a"]
    assert (metrics["frames"], metrics["frames_with_energy"]) == (4, 3)
    frames.has_energy[:] = False
    assert np.isnan(evaluate(model, FrameTensors(frames, torch.float64), np.arange(4), 8)["energy_mae_mev"])


def _config(tmp_path, data, epochs=2, extra=()):
    overrides = [*TINY, f"data.path={data}", f"output_dir={tmp_path / 'run'}", f"train.epochs={epochs}", *extra]
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _extxyz_frames(tmp_path_factory.mktemp("corpus") / "corpus.extxyz", num_off=24, num_minima=8)


def test_force_centric_run_logs_every_term_and_resumes_exactly(tmp_path, corpus, monkeypatch):
    extra = [*FORCE_CENTRIC, "data.n_test=0", "train.batch_size=4"]
    straight = _config(tmp_path / "straight", corpus, epochs=3, extra=extra)
    result = train(straight, progress=False)
    run = tmp_path / "straight" / "run"
    record = load_checkpoint(run / "last.pt")["history"][0]
    assert {"energy", "forces", "zero_force", "denoising", "smoothness"} <= set(record)
    assert record["zero_force"] > 0 and record["denoising"] > 0
    assert result.test_metrics == {}
    original = trainer_module._run_epoch

    def crash_at_third(state, data, split, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(state, data, split, epoch)

    crashed = _config(tmp_path / "crashed", corpus, epochs=3, extra=extra)
    monkeypatch.setattr(trainer_module, "_run_epoch", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        train(crashed, progress=False)
    monkeypatch.setattr(trainer_module, "_run_epoch", original)
    train(crashed, resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "crashed" / "run" / "last.pt")["model_state"]
    for name, value in load_checkpoint(run / "last.pt")["model_state"].items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus) -> Path:
    """A tiny run trained for one epoch on the extxyz corpus (energies in eV)."""
    out = tmp_path_factory.mktemp("pretrain")
    train(_config(out, corpus, epochs=1, extra=[*FORCE_CENTRIC, "data.n_test=0"]), progress=False)
    return out / "run" / "best.pt"


def _new_data(tmp_path) -> Path:
    """The synthetic molecule in MD17 layout with its energy zero moved by 500 kcal/mol: another level of theory."""
    path = write_md17_npz(tmp_path / "new.npz", num_frames=30, seed=5)
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, "E": arrays["E"] + 500.0})
    return path


def test_fine_tuning_loads_the_weights_and_refits_the_references(tmp_path, pretrained):
    config = _config(tmp_path, _new_data(tmp_path), extra=[f"init_from={pretrained}"])
    data = load_training_data(config.data)
    model = pretrained_model(config, data.frames, data.split.train)
    checkpoint = load_checkpoint(pretrained)
    for name, value in model.state_dict().items():
        if name not in FITTED_BUFFERS:
            torch.testing.assert_close(value, checkpoint["ema_state"][name], rtol=0, atol=0)
    species = checkpoint["species"]
    refitted = [float(model.element_energies()[z]) for z in species]
    expected = fit_element_energies(data.frames, data.split.train, species)
    np.testing.assert_allclose(refitted, expected, rtol=0, atol=1e-8)
    assert np.abs(np.array(refitted) - np.array(checkpoint["element_energies_ev"])).min() > 1.0


def test_fine_tuning_names_what_does_not_match(tmp_path, pretrained):
    data_path = _new_data(tmp_path)
    config = _config(tmp_path, data_path, extra=[f"init_from={pretrained}", "model.backbone_options.hidden=16"])
    data = load_training_data(config.data)
    with pytest.raises(ConfigError, match=r"model\.backbone_options.*embedding\.weight has shape"):
        pretrained_model(config, data.frames, data.split.train)
    config = _config(tmp_path, data_path, extra=[f"init_from={pretrained}", "model.cutoff=4.0"])
    with pytest.raises(ConfigError, match=r"model\.cutoff"):
        pretrained_model(config, data.frames, data.split.train)
    model = build_tiny_model()
    with pytest.raises(ConfigError, match="unexpected extra.weight"):
        load_pretrained_weights(model, {**model.state_dict(), "extra.weight": torch.zeros(1)})
    nitrogen = data.frames.subset(np.arange(5))
    nitrogen.atomic_numbers[0] = 7
    config = _config(tmp_path, data_path, extra=[f"init_from={pretrained}"])
    with pytest.raises(ConfigError, match=r"element\(s\) \[7\]"):
        pretrained_model(config, nitrogen, np.arange(5))


def test_fine_tuning_from_a_potential_file_takes_its_weights_without_its_repulsion(tmp_path, pretrained):
    # A user whose MD collapses may hold only the exported file (with its core repulsion on).
    potential = export_checkpoint(pretrained, tmp_path / "p.pt", dtype="float32", core_repulsion_ev_per_a3=50.0)
    data_path = _new_data(tmp_path)
    from_file = _config(tmp_path, data_path, extra=[f"init_from={potential}"])
    data = load_training_data(from_file.data)
    model = pretrained_model(from_file, data.frames, data.split.train)
    reference = pretrained_model(
        _config(tmp_path, data_path, extra=[f"init_from={pretrained}"]), data.frames, data.split.train
    )
    for name, value in reference.state_dict().items():
        # float32 in the file: the weights to float32 precision; the repulsion off, as training builds it.
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert float(model.priors["core_repulsion"].strength) == 0.0
    committee = tmp_path / "committee.pt"
    export_committee([pretrained, pretrained], committee, fit_threshold=False)
    with pytest.raises(ValueError, match="only a single model"):
        load_init(committee)
    with pytest.raises(FileNotFoundError, match="nor a shipped potential"):
        load_init(tmp_path / "missing.pt")
    shipped = load_init("ethanol")  # a shipped potential by name
    assert shipped["species"] == [1, 6, 8] and shipped["data_summary"]["from_potential"].endswith("ethanol.pt")


def test_a_fine_tuning_run_resumes_its_own_checkpoint_not_the_init(tmp_path, pretrained):
    init = tmp_path / "init.pt"
    init.write_bytes(pretrained.read_bytes())
    data_path = _new_data(tmp_path)
    train(_config(tmp_path, data_path, epochs=1, extra=[f"init_from={init}"]), progress=False)
    first = load_checkpoint(tmp_path / "run" / "last.pt")
    assert first["data_summary"]["init_from"] == str(init)
    init.unlink()
    result = train(_config(tmp_path, data_path, epochs=2, extra=[f"init_from={init}"]), resume=True, progress=False)
    assert result.epochs_run == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["element_energies_ev"] == first["element_energies_ev"]
    with pytest.raises(FileNotFoundError, match="init_from"):
        train(_config(tmp_path / "other", data_path, extra=[f"init_from={init}"]), progress=False)


# --- configs -----------------------------------------------------------------------------------


def test_config_validation_names_bad_keys(tmp_path):
    cases = {
        "train.loss_weights.zero_forces=1": "train.loss_weights.zero_forces",
        "train.denoising_sigma=-0.1": "train.denoising_sigma",
        "train.denoising_temperature_k=hot": "train.denoising_temperature_k",
        "data.equilibrium_pth=minima.extxyz": "data.equilibrium_pth",
        "data.energy_consistent=maybe": "data.energy_consistent",
        "data.n_test=-1": "data.n_test",
        "init_frm=best.pt": "init_frm",
        "init_from=3": "init_from",
    }
    for override, key in cases.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [override])
    config = load_config(None, ["data.equilibrium_path=m.extxyz", "init_from=a/best.pt"])
    assert (config.train.denoising_sigma, config.train.denoising_temperature_k) == (0.04, 300.0)
    assert config.data.equilibrium_path == "m.extxyz" and config.init_from == "a/best.pt"


def test_pretraining_and_fine_tuning_examples_fit_together():
    pretrain = load_config(EXAMPLES / "pretrain_xtb.yaml")
    assert pretrain.model.backbone == "et" and pretrain.data.path.endswith("gfn2_corpus.extxyz")
    weighted = {name for name, weight in pretrain.train.loss_weights.items() if weight}
    assert {"forces", "zero_force", "denoising", "smoothness"} <= weighted
    for molecule in ("ethanol", "aspirin"):
        config = load_config(EXAMPLES / f"finetune_rmd17_{molecule}.yaml")
        assert config.init_from == f"{pretrain.output_dir}/best.pt"
        assert config.model == pretrain.model
        assert config.data.path.endswith(f"rmd17_{molecule}.npz") and config.data.split == 0
        assert config.data.n_train == 950
        assert config.train.max_minutes == 0, "a time cap would let scratch and fine-tuned runs train different epochs"
        scratch = load_config(EXAMPLES / f"finetune_rmd17_{molecule}.yaml", ["init_from=null"])
        assert scratch.init_from is None and scratch.train == config.train and scratch.model == config.model
