"""Energy models (file format v1 forward): every backbone with every encoding.

Each model is built once per session in float64 (hidden 16, 2 layers, 2 heads
where the backbone has heads, encoding size 8 (1 for raw), 16 spline bins,
cutoff 5 A) and put in eval mode.
"""

import copy
import io

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE_OPTIONS
from geometry import evaluate, finite_difference_forces, inputs, random_orthogonal

from mlff.encodings import ENCODINGS
from mlff.models import BACKBONES, EnergyModel, ModelConfig, build_model

CUTOFF = 5.0
SPECIES = [1, 6, 8]
# Realistic magnitudes (eV), with digits below the float32 resolution.
REFERENCE_ENERGIES = [-13.587654321, -1029.123456789, -2041.987654321]
ENCODING_NAMES = sorted(ENCODINGS)
BACKBONE_NAMES = sorted(BACKBONES)
ARCHITECTURES = [(backbone, encoding) for backbone in BACKBONE_NAMES for encoding in ENCODING_NAMES]

# Ethanol, Angstrom: C-C 1.51, C-O 1.42, C-H 1.09, O-H 0.96.
ETHANOL_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]
ETHANOL_XYZ = [
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
# Methane, C-H 1.09 A.
METHANE_Z = [6, 1, 1, 1, 1]
_A = 1.09 / np.sqrt(3.0)
METHANE_XYZ = [[0.0, 0.0, 0.0], [_A, _A, _A], [-_A, -_A, _A], [-_A, _A, -_A], [_A, -_A, -_A]]


pytestmark = pytest.mark.usefixtures("single_thread")


def model_config(backbone: str, encoding: str, dtype: str = "float64") -> ModelConfig:
    options = {"n_bins": 16, "r_min": 0.0} if encoding == "spline" else {}
    return ModelConfig(
        backbone=backbone,
        backbone_options=dict(TINY_BACKBONE_OPTIONS[backbone]),
        encoding=encoding,
        encoding_size=1 if encoding == "raw" else 8,  # the raw distance is one feature
        encoding_options=options,
        cutoff=CUTOFF,
        dtype=dtype,
    )


def make_model(backbone: str, encoding: str, dtype: str = "float64", seed: int = 0) -> EnergyModel:
    torch.manual_seed(seed)
    config = model_config(backbone, encoding, dtype)
    model = build_model(config, SPECIES, REFERENCE_ENERGIES, energy_scale_ev=10.0).eval()
    if encoding == "spline":
        # Move the spline off its smooth Gaussian-like init, as training would,
        # so it is not a near copy of the Gaussian encoding.
        spline = model.backbone.encoding
        with torch.no_grad():
            spline.values.add_(0.3 * torch.randn_like(spline.values))
            spline.slopes.add_(torch.randn_like(spline.slopes))
    # Move every bias off its init too: the ET starts with zero biases (as
    # TorchMD-NET does), which would hide a term that a trained bias switches
    # on as a pair enters the cutoff.
    with torch.no_grad():
        for name, parameter in model.backbone.named_parameters():
            if name.endswith("bias"):
                parameter.add_(0.2 * torch.randn_like(parameter))
    return model


def perturbed(xyz, seed: int, scale: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz + scale * rng.standard_normal(xyz.shape)


@pytest.fixture(scope="session", params=ARCHITECTURES, ids=["-".join(pair) for pair in ARCHITECTURES])
def model(request):
    return make_model(*request.param)


@pytest.fixture(scope="session")
def network_only(model):
    """The same model with zero reference energies (for finite differences)."""
    copied = copy.deepcopy(model)
    copied.priors["element_reference"].energies_nev.zero_()
    return copied


@pytest.fixture(scope="session")
def ethanol():
    return ETHANOL_Z, perturbed(ETHANOL_XYZ, seed=10, scale=0.03)


@pytest.fixture(scope="session")
def methane():
    return METHANE_Z, perturbed(METHANE_XYZ, seed=11, scale=0.03)


def assert_close(actual, expected, rtol, atol=0.0):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# Output format and forces


def test_output_shapes_and_dtypes(model, ethanol, methane):
    energy, forces = model(*inputs([ethanol, methane]))
    assert energy.shape == (2,) and energy.dtype == torch.float64
    assert forces.shape == (14, 3) and forces.dtype == torch.float64
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    # The tiny network is not trivially flat: the test molecules feel forces.
    assert forces.abs().max() > 1e-4


def test_forces_are_minus_energy_gradient(model, network_only, ethanol):
    numbers, xyz = ethanol
    _, forces = evaluate(model, [ethanol])
    # Through the same network without its ~-4000 eV reference offset.
    finite_difference = finite_difference_forces(network_only, ethanol)
    scale = forces.abs().max().item()
    assert_close(forces, finite_difference, rtol=0, atol=1e-6 * scale)


def test_forces_accept_positions_that_already_require_grad(model, ethanol):
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    energy, forces = model(positions.clone().requires_grad_(True), numbers, batch, cell, pbc)
    expected_energy, expected_forces = evaluate(model, [ethanol])
    assert_close(energy.detach(), expected_energy, rtol=1e-14)
    assert_close(forces.detach(), expected_forces, rtol=1e-12, atol=1e-14)


def test_forces_under_no_grad_are_the_forces(model, ethanol):
    """A caller's torch.no_grad() (a common inference habit) must not zero the forces: the eager
    model computes them, a scripted one (TorchScript has no enable_grad) refuses with a message."""
    expected_energy, expected_forces = evaluate(model, [ethanol])
    with torch.no_grad():
        energy, forces = model(*inputs([ethanol]))
        assert_close(energy.detach(), expected_energy, rtol=1e-12)
        assert_close(forces.detach(), expected_forces, rtol=1e-10, atol=1e-12)
        with pytest.raises(torch.jit.Error, match="outside torch.no_grad"):
            torch.jit.script(model)(*inputs([ethanol]))


# ---------------------------------------------------------------------------
# Symmetries


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
def test_rotation_and_translation(model, ethanol, proper):
    numbers, xyz = ethanol
    rotation = random_orthogonal(seed=5 if proper else 6, proper=proper)
    shift = np.array([3.7, -12.1, 25.3])
    energy, forces = evaluate(model, [ethanol])
    moved_energy, moved_forces = evaluate(model, [(numbers, xyz @ rotation.T + shift)])
    assert_close(moved_energy, energy, rtol=1e-12)
    # F(R x + t) = R F(x)   (row vectors: F @ R^T).
    expected = forces @ torch.as_tensor(rotation.T)
    assert_close(moved_forces, expected, rtol=0, atol=1e-10 * forces.abs().max().item())


def test_permutation(model, ethanol):
    numbers, xyz = ethanol
    order = np.random.default_rng(7).permutation(len(numbers))
    energy, forces = evaluate(model, [ethanol])
    permuted_energy, permuted_forces = evaluate(model, [(list(np.asarray(numbers)[order]), xyz[order])])
    assert_close(permuted_energy, energy, rtol=1e-12)
    assert_close(permuted_forces, forces[torch.as_tensor(order)], rtol=0, atol=1e-12)


def test_energy_depends_on_species_not_just_geometry(model, ethanol):
    numbers, xyz = ethanol
    swapped = list(numbers)
    swapped[0], swapped[2] = swapped[2], swapped[0]  # C <-> O
    energy, _ = evaluate(model, [ethanol])
    other, _ = evaluate(model, [(swapped, xyz)])
    # Same reference sum, different network energy.
    assert abs(other.item() - energy.item()) > 1e-6


# ---------------------------------------------------------------------------
# Batching


def test_batch_equals_separate_structures(model, ethanol, methane):
    alone_e, alone_f = evaluate(model, [ethanol])
    alone_m, alone_mf = evaluate(model, [methane])
    # Put methane right on top of ethanol: any pair across structures would show.
    numbers, xyz = methane
    overlapping = (numbers, xyz + np.asarray(ethanol[1]).mean(axis=0))
    energies, forces = evaluate(model, [ethanol, overlapping])
    assert_close(energies, torch.cat([alone_e, alone_m]), rtol=1e-13)
    assert_close(forces, torch.cat([alone_f, alone_mf]), rtol=0, atol=1e-12)
    # Other order, and with a third copy of ethanol.
    energies, forces = evaluate(model, [overlapping, ethanol, ethanol])
    assert_close(energies, torch.cat([alone_m, alone_e, alone_e]), rtol=1e-13)
    assert_close(forces, torch.cat([alone_mf, alone_f, alone_f]), rtol=0, atol=1e-12)


def test_single_atom_structure(model):
    # No pairs at all: energy is finite, forces exactly zero.
    energy, forces = evaluate(model, [([8], np.zeros((1, 3)))])
    assert torch.isfinite(energy).all()
    assert (forces == 0).all()


# ---------------------------------------------------------------------------
# Cutoff smoothness


def test_energy_and_forces_continuous_across_cutoff(model, methane):
    """Pull an extra H away from a methane H along the C-H axis, across r_cut."""
    numbers, xyz = METHANE_Z, np.asarray(METHANE_XYZ)
    axis = xyz[1] / np.linalg.norm(xyz[1])  # C -> H1; H1 is methane's outermost atom along it

    def system(distance: float):
        return (numbers + [1], np.vstack([xyz, xyz[1] + distance * axis]))

    step = 1e-3
    distances = CUTOFF + step * np.arange(-100, 51)  # 4.9 .. 5.05 A
    energies, forces = evaluate(model, [system(d) for d in distances])
    forces = forces.view(len(distances), 6, 3)
    along = forces[:, 5] @ torch.as_tensor(axis)  # force on the moving H along its path

    # Beyond the cutoff the pair is gone: exactly methane + a lone H.
    separate_e, separate_f = evaluate(model, [(numbers, xyz), ([1], np.zeros((1, 3)))])
    outside = torch.as_tensor(distances >= CUTOFF)
    assert_close(energies[outside], separate_e.sum().expand(int(outside.sum())), rtol=1e-14)
    assert (forces[outside][:, 5] == 0).all()
    assert_close(forces[outside][:, :5], separate_f[:5].expand(int(outside.sum()), 5, 3), rtol=0, atol=1e-13)

    # No jump anywhere: each energy step equals the work of the (trapezoidal)
    # force over that step, up to O(step^3) terms.
    work = 0.5 * (along[1:] + along[:-1]) * step
    energy_steps = energies[1:] - energies[:-1]
    assert (energy_steps + work).abs().max() <= 1e-3 * step * along.abs().max() + 1e-11
    assert along.abs().max() > 0  # the pair did interact inside the cutoff

    # Inside, the pair's energy and force vanish like (r_c - r)^2 and (r_c - r):
    # the cosine envelope is quadratic at r_c.
    delta_e = energies - separate_e.sum()
    far, near = 80, 98  # r_c - 0.02 and r_c - 0.002
    assert abs(distances[far] - (CUTOFF - 0.02)) < 1e-9 and abs(distances[near] - (CUTOFF - 0.002)) < 1e-9
    assert abs(delta_e[far]) > 1e-12
    assert abs(delta_e[near]) <= 2.0 * abs(delta_e[far]) * (0.1**2)
    assert abs(along[near]) <= 2.0 * abs(along[far]) * 0.1
    # Force and energy are tied: F = -dE/dr = 2 dE / delta for E ~ A delta^2.
    assert along[near].item() == pytest.approx(2 * delta_e[near].item() / 0.002, rel=0.05)


# ---------------------------------------------------------------------------
# Input validation


def test_rejects_nan_and_inf_positions(model, ethanol):
    for bad in (float("nan"), float("inf"), -float("inf")):
        positions, numbers, batch, cell, pbc = inputs([ethanol])
        positions[3, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            model(positions, numbers, batch, cell, pbc)


@pytest.mark.parametrize("shape", [(9, 2), (27,), (1, 9, 3), ()], ids=["N2", "flat", "3d", "scalar"])
def test_rejects_wrong_positions_shape(model, ethanol, shape):
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    bad = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"positions must have shape \[N, 3\]"):
        model(bad, numbers, batch, cell, pbc)


def test_rejects_mismatched_numbers_and_batch(model, ethanol):
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    with pytest.raises(ValueError, match="atomic_numbers and batch"):
        model(positions, numbers[:-1], batch, cell, pbc)
    with pytest.raises(ValueError, match="atomic_numbers and batch"):
        model(positions, numbers, batch[:-1], cell, pbc)


def test_rejects_unknown_species_and_names_it(model, ethanol):
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    numbers = numbers.clone()
    numbers[4] = 9  # fluorine
    with pytest.raises(ValueError, match=r"atomic number 9 .*\[1, 6, 8\]"):
        model(positions, numbers, batch, cell, pbc)
    for out_of_table in (0, -3, 119, 200):
        numbers[4] = out_of_table
        with pytest.raises(ValueError, match="atomic number"):
            model(positions, numbers, batch, cell, pbc)


def test_rejects_a_singular_periodic_cell(model, ethanol):
    # Periodic input is format v2's (tests/test_periodic.py); a cell without volume is an error.
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    for axis in range(3):
        periodic = pbc.clone()
        periodic[0, axis] = True
        with pytest.raises(ValueError, match="singular"):
            model(positions, numbers, batch, torch.zeros(1, 3, 3, dtype=torch.float64), periodic)


def test_rejects_bad_cell_and_pbc_shapes(model, ethanol):
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    with pytest.raises(ValueError, match="cell"):
        model(positions, numbers, batch, torch.zeros(3, 3, dtype=torch.float64), pbc)
    with pytest.raises(ValueError, match="pbc"):
        model(positions, numbers, batch, cell, torch.zeros(2, 3, dtype=torch.bool))


def test_rejects_unsorted_or_out_of_range_batch(model, ethanol, methane):
    positions, numbers, batch, cell, pbc = inputs([ethanol, methane])
    unsorted = batch.clone()
    unsorted[0], unsorted[-1] = 1, 0
    with pytest.raises(ValueError, match="non-decreasing"):
        model(positions, numbers, unsorted, cell, pbc)
    with pytest.raises(ValueError, match="batch indices"):
        model(positions, numbers, batch, cell[:1], pbc[:1])
    with pytest.raises(ValueError, match="batch indices"):
        model(positions, numbers, batch - 1, cell, pbc)


def test_build_model_rejects_unknown_backbone_and_options():
    config = model_config("egnn", "spline")
    config.backbone = "schnet"
    with pytest.raises(ValueError, match="schnet"):
        build_model(config, SPECIES, REFERENCE_ENERGIES)
    config = model_config("egnn", "spline")
    config.backbone_options = {"hidden": 16, "layerz": 2}
    with pytest.raises(ValueError, match="layerz"):
        build_model(config, SPECIES, REFERENCE_ENERGIES)
    with pytest.raises(ValueError, match="sorted"):
        build_model(model_config("egnn", "spline"), [6, 1, 8], REFERENCE_ENERGIES)
    with pytest.raises(ValueError, match="float16"):
        ModelConfig(dtype="float16")


@pytest.mark.parametrize("backbone", ["transformer", "et"])
def test_attention_backbones_need_hidden_divisible_by_heads(backbone):
    config = model_config(backbone, "gaussian")
    config.backbone_options = {"hidden": 16, "heads": 3, "layers": 1}
    with pytest.raises(ValueError, match="multiple of heads"):
        build_model(config, SPECIES, REFERENCE_ENERGIES)


# ---------------------------------------------------------------------------
# TorchScript


@pytest.fixture(scope="session")
def scripted(model):
    return torch.jit.script(model)


def test_torchscript_matches_eager(model, scripted, ethanol, methane):
    molecules = [ethanol, methane]
    energy, forces = evaluate(model, molecules)
    script_energy, script_forces = scripted(*inputs(molecules))
    assert_close(script_energy.detach(), energy, rtol=1e-6)
    assert_close(script_forces.detach(), forces, rtol=1e-6, atol=1e-6 * forces.abs().max().item())
    assert_close(scripted.element_energies(), model.element_energies(), rtol=0)


def test_torchscript_save_load_roundtrip(model, scripted, ethanol, methane, tmp_path):
    molecules = [methane, ethanol]
    energy, forces = evaluate(model, molecules)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    from_buffer = torch.jit.load(buffer)
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    from_file = torch.jit.load(str(path))
    for loaded in (from_buffer, from_file):
        loaded_energy, loaded_forces = loaded(*inputs(molecules))
        assert_close(loaded_energy.detach(), energy, rtol=1e-6)
        assert_close(loaded_forces.detach(), forces, rtol=1e-6, atol=1e-6 * forces.abs().max().item())


def test_torchscript_rejects_bad_inputs_with_message(scripted, ethanol):
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    positions[0, 0] = float("nan")
    with pytest.raises((ValueError, torch.jit.Error), match="NaN or inf"):
        scripted(positions, numbers, batch, cell, pbc)
    positions, numbers, batch, cell, pbc = inputs([ethanol])
    numbers[1] = 9
    with pytest.raises((ValueError, torch.jit.Error), match="atomic number 9"):
        scripted(positions, numbers, batch, cell, pbc)


# ---------------------------------------------------------------------------
# Reference energies in float64


@pytest.fixture(scope="module")
def float32_models():
    """The same float32 network, with and without ~-1000 eV reference energies."""
    with_references = make_model("egnn", "spline", dtype="float32", seed=1)
    without = copy.deepcopy(with_references)
    without.priors["element_reference"].energies_nev.zero_()
    return with_references, without


def test_reference_energies_added_in_float64(float32_models, ethanol, methane):
    with_references, without = float32_models
    assert with_references.energy_scale.dtype == torch.float32
    numbers, xyz = ethanol
    # Slightly different geometries: their network energies differ by far less
    # than the float32 resolution of a -4,000 eV total (0.5 meV steps) allows.
    geometries = [(numbers, xyz)] + [(numbers, perturbed(xyz, seed=20 + k, scale=0.01)) for k in range(3)] + [methane]
    total, _ = with_references(*inputs(geometries, dtype=torch.float32))
    network, _ = without(*inputs(geometries, dtype=torch.float32))
    assert total.dtype == torch.float64 and network.dtype == torch.float64
    total, network = total.detach(), network.detach()
    # The network energies really differ between the geometries.
    assert (network[1:4] - network[0]).abs().max() > 1e-5
    # Differences between geometries are the network-only differences, to 1e-9 eV.
    assert_close(total[1:4] - total[0], network[1:4] - network[0], rtol=0, atol=1e-9)
    # And the offset is exactly the float64 sum of the reference energies.
    expected = torch.tensor(
        [sum(REFERENCE_ENERGIES[SPECIES.index(z)] for z in molecule[0]) for molecule in geometries],
        dtype=torch.float64,
    )
    assert_close(total - network, expected, rtol=0, atol=1e-9)


def test_reference_energies_survive_dtype_conversion():
    model = make_model("egnn", "gaussian")
    before = model.element_energies().clone()
    expected = torch.zeros(119, dtype=torch.float64)
    expected[torch.tensor(SPECIES)] = torch.tensor(REFERENCE_ENERGIES, dtype=torch.float64)
    assert_close(before, expected, rtol=0, atol=1e-12)
    model.to(torch.float32)
    after = model.element_energies()
    assert after.dtype == torch.float64
    assert_close(after, expected, rtol=0, atol=1e-12)
    assert torch.jit.script(model).element_energies().equal(after)
