"""Neural polarization, the equivariant transformer's `polarization` option.

The polarized model is a tiny float64 ET (hidden 16, 2 heads, 2 layers, spline encoding of
size 8, cutoff 5 A) with its biases moved off their zero init, as training would.
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from geometry import evaluate, finite_difference_forces, inputs, random_orthogonal

from mlff.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save
from mlff.export import export_checkpoint, export_model, load_potential
from mlff.models import EnergyModel, ModelConfig, build_model

CUTOFF = 5.0
SPECIES = [1, 6, 8]
REFERENCE_ENERGIES = [-13.587654321, -1029.123456789, -2041.987654321]
ETHANOL_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]
ETHANOL_XYZ = np.array(
    [
        [-1.2300, -0.2300, 0.0000],
        [0.0400, 0.5900, 0.0000],
        [1.1800, -0.2600, 0.0000],
        [-2.1100, 0.4100, 0.0000],
        [-1.2700, -0.8700, 0.8800],
        [-1.2700, -0.8700, -0.8800],
        [0.0700, 1.2400, 0.8800],
        [0.0700, 1.2400, -0.8800],
        [1.9700, 0.2900, 0.0000],
    ]
)

pytestmark = pytest.mark.usefixtures("single_thread")


def et_config(polarization: bool | None, dtype: str = "float64") -> ModelConfig:
    options: dict = {"hidden": 16, "heads": 2, "layers": 2}
    if polarization is not None:
        options["polarization"] = polarization
    return ModelConfig(
        backbone="et",
        backbone_options=options,
        encoding="spline",
        encoding_size=8,
        encoding_options={"n_bins": 16, "r_min": 0.0},
        cutoff=CUTOFF,
        dtype=dtype,
    )


def make_model(polarization: bool | None, seed: int = 0, references=REFERENCE_ENERGIES) -> EnergyModel:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(et_config(polarization), SPECIES, list(references), energy_scale_ev=10.0).eval()
        with torch.no_grad():
            for name, parameter in model.backbone.named_parameters():
                if name.endswith("bias"):
                    parameter.add_(0.2 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def polarized():
    return make_model(True)


@pytest.fixture(scope="module")
def ethanol():
    rng = np.random.default_rng(10)
    return ETHANOL_Z, ETHANOL_XYZ + 0.03 * rng.standard_normal(ETHANOL_XYZ.shape)


def displacements(model: EnergyModel, molecule) -> list[torch.Tensor]:
    """The polarization displacements d [N, 3] of each layer (from a forward hook on W_d)."""
    seen: list[torch.Tensor] = []
    handles = [
        block.displacement.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().squeeze(-1)))
        for block in model.backbone.polarization_blocks
    ]
    try:
        evaluate(model, [molecule])
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_polarization_points_move_and_change_the_energy(polarized, ethanol):
    moved = displacements(polarized, ethanol)
    assert len(moved) == 2
    for d in moved:
        assert d.shape == (9, 3)
        assert 1e-3 < d.norm(dim=-1).max() < 5.0  # the points leave their nuclei, by less than a cutoff
    # The polarization blocks carry energy: zeroing W_d's and the cross attention's outputs changes it.
    plain = copy.deepcopy(polarized)
    with torch.no_grad():
        for block in plain.backbone.polarization_blocks:
            block.attention.output.weight.zero_()
            block.attention.output.bias.zero_()
            block.attention.value_filter.weight.zero_()
            block.attention.value_filter.bias.fill_(-1e3)  # silu(-1e3) = 0: no vector messages
    assert abs(evaluate(polarized, [ethanol])[0] - evaluate(plain, [ethanol])[0]).item() > 1e-4


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
def test_energy_invariant_and_forces_equivariant(polarized, ethanol, proper):
    numbers, xyz = ethanol
    rotation = random_orthogonal(seed=5 if proper else 6, proper=proper)
    shift = np.array([3.7, -12.1, 25.3])
    energy, forces = evaluate(polarized, [ethanol])
    moved_energy, moved_forces = evaluate(polarized, [(numbers, xyz @ rotation.T + shift)])
    torch.testing.assert_close(moved_energy, energy, rtol=1e-12, atol=0)
    expected = forces @ torch.as_tensor(rotation.T)
    torch.testing.assert_close(moved_forces, expected, rtol=0, atol=1e-10 * forces.abs().max().item())
    # The displacements rotate with the molecule: d(R x + t) = R d(x).
    moved = displacements(polarized, (numbers, xyz @ rotation.T + shift))
    for before, after in zip(displacements(polarized, ethanol), moved):
        torch.testing.assert_close(after, before @ torch.as_tensor(rotation.T), rtol=0, atol=1e-12)


def test_permutation(polarized, ethanol):
    numbers, xyz = ethanol
    order = np.random.default_rng(7).permutation(len(numbers))
    energy, forces = evaluate(polarized, [ethanol])
    permuted_energy, permuted_forces = evaluate(polarized, [(list(np.asarray(numbers)[order]), xyz[order])])
    torch.testing.assert_close(permuted_energy, energy, rtol=1e-12, atol=0)
    torch.testing.assert_close(permuted_forces, forces[torch.as_tensor(order)], rtol=0, atol=1e-12)


def test_forces_are_minus_energy_gradient(polarized, ethanol):
    numbers, xyz = ethanol
    network_only = copy.deepcopy(polarized)
    network_only.priors["element_reference"].energies_nev.zero_()
    _, forces = evaluate(network_only, [ethanol])
    assert forces.abs().max() > 1e-3
    finite_difference = finite_difference_forces(network_only, ethanol)
    torch.testing.assert_close(forces, finite_difference, rtol=0, atol=1e-6 * forces.abs().max().item())


def test_smooth_as_a_pair_crosses_the_cutoff(polarized, ethanol):
    """A far H walks across the cutoff of ethanol's O: energy steps equal the force's work."""
    numbers, xyz = ethanol
    axis = np.array([1.0, 0.0, 0.0])
    step = 1e-3
    offsets = CUTOFF + step * np.arange(-60, 61)
    systems = [(list(numbers) + [1], np.vstack([xyz, xyz[2] + d * axis])) for d in offsets]
    energies, forces = evaluate(polarized, systems)
    along = forces.view(len(offsets), 10, 3)[:, 9] @ torch.as_tensor(axis)
    work = 0.5 * (along[1:] + along[:-1]) * step
    steps = energies[1:] - energies[:-1]
    assert along.abs().max() > 0
    assert (steps + work).abs().max() <= 1e-3 * step * along.abs().max() + 1e-11


def test_exported_file_equals_eager_model(polarized, ethanol, tmp_path):
    config = et_config(True)
    path = export_model(polarized, tmp_path / "polarized.pt", config=config)
    exported = load_potential(path)
    molecules = [ethanol, (ETHANOL_Z[:3], ethanol[1][:3])]
    energy, forces = evaluate(polarized, molecules)
    file_energy, file_forces = exported(*inputs(molecules))
    torch.testing.assert_close(file_energy.detach(), energy, rtol=1e-14, atol=0)
    torch.testing.assert_close(file_forces.detach(), forces, rtol=0, atol=1e-12)

    # The same through a training checkpoint and export_checkpoint.
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": {"model": dataclasses.asdict(config)},
        "species": SPECIES,
        "element_energies_ev": REFERENCE_ENERGIES,
        "energy_scale_ev": 10.0,
        "model_state": polarized.state_dict(),
        "ema_state": None,
    }
    atomic_torch_save(checkpoint, tmp_path / "checkpoint.pt")
    from_checkpoint = load_potential(export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "from_checkpoint.pt"))
    checkpoint_energy, checkpoint_forces = from_checkpoint(*inputs(molecules))
    torch.testing.assert_close(checkpoint_energy.detach(), energy, rtol=1e-14, atol=0)
    torch.testing.assert_close(checkpoint_forces.detach(), forces, rtol=0, atol=1e-12)


def test_off_is_exactly_the_plain_model(ethanol):
    plain, off, on = make_model(None), make_model(False), make_model(True)
    plain_state, off_state = plain.state_dict(), off.state_dict()
    assert list(off_state) == list(plain_state)
    assert all(torch.equal(off_state[key], plain_state[key]) for key in plain_state)
    assert sum(p.numel() for p in off.parameters()) == sum(p.numel() for p in plain.parameters())
    # The option adds only the polarization blocks, after everything the plain model has.
    on_keys = list(on.state_dict())
    assert [key for key in on_keys if ".polarization_blocks." not in key] == list(plain_state)
    molecules = [ethanol, (ETHANOL_Z[:3], ethanol[1][:3])]
    for model in (plain, off):
        model.eval()
    plain_energy, plain_forces = evaluate(plain, molecules)
    off_energy, off_forces = evaluate(off, molecules)
    assert torch.equal(off_energy, plain_energy) and torch.equal(off_forces, plain_forces)
    scripted_energy, scripted_forces = torch.jit.script(copy.deepcopy(off))(*inputs(molecules))
    assert torch.equal(scripted_energy.detach(), plain_energy)


@pytest.mark.parametrize("backbone", ["egnn", "transformer"])
def test_refused_for_backbones_without_vector_features(backbone):
    options = {"hidden": 16, "layers": 2, "polarization": True}
    if backbone == "transformer":
        options["heads"] = 2
    config = ModelConfig(backbone=backbone, backbone_options=options, encoding_size=8)
    with pytest.raises(ValueError, match=f"polarization needs a backbone with equivariant vector features.*{backbone}"):
        build_model(config, SPECIES, REFERENCE_ENERGIES)
