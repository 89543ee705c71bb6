"""Priors: one interface and a registry; their forces are minus their energy's gradient; they survive export."""

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from mlff.export import export_model, load_potential
from mlff.models.energy import LEGACY_KEYS, upgrade_state_dict
from mlff.models.neighbors import Edges
from mlff.models.priors import PRIORS, CubicRepulsion, ElementReference, Prior, ZBLRepulsion, build_prior
from mlff.models.priors.base import per_structure

pytestmark = pytest.mark.usefixtures("single_thread")

SPECIES = [1, 6, 8]
ONSETS_A = torch.tensor([[1.5, 1.0, 0.9], [1.0, 1.3, 1.2], [0.9, 1.2, 1.4]], dtype=torch.float64)
# Two structures: O H H C (two pairs inside their onsets) and H H.
NUMBERS = torch.tensor([8, 1, 1, 6, 1, 1])
BATCH = torch.tensor([0, 0, 0, 0, 1, 1])
POSITIONS = torch.tensor(
    [[0.0, 0.0, 0.0], [0.7, 0.1, 0.0], [-0.2, 0.8, 0.1], [0.3, -0.4, 1.0], [5.0, 5.0, 5.0], [5.0, 6.2, 5.0]],
    dtype=torch.float64,
)


class PairSpring(Prior):
    """A test prior from the pair vectors: k |r_j - r_i|^2 / 2 for every pair within the cutoff."""

    def __init__(self, species: list[int], cutoff: float, stiffness_ev_per_a2: float = 0.3) -> None:
        super().__init__(species, cutoff)
        self.register_buffer("stiffness", torch.tensor(float(stiffness_ev_per_a2)))

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        species: torch.Tensor,
        batch: torch.Tensor,
        edges: Edges,
        num_structures: int,
    ) -> torch.Tensor:
        # Each pair appears as two directed edges: half the pair energy each.
        energy = 0.25 * self.stiffness * edges.vectors.pow(2).sum(-1)
        return per_structure(energy, batch[edges.index[0]], num_structures)


def prior_energy(prior: Prior, positions: torch.Tensor) -> torch.Tensor:
    """A prior's energy [B] eV alone, through the energy model's own edges."""
    model = build_tiny_model()
    species = model.species_table[NUMBERS]
    return prior(NUMBERS, species, BATCH, model.edges(positions, BATCH, 2), 2)


def test_the_registry_builds_every_prior_with_one_constructor():
    assert set(PRIORS) == {"element_reference", "core_repulsion", "zbl_repulsion"}
    for name in PRIORS:
        prior = build_prior(name, SPECIES, 5.0)
        assert isinstance(prior, Prior)
        assert prior_energy(prior, POSITIONS).abs().max() == 0.0, f"{name} is off (zero) by default"
    with pytest.raises(ValueError, match="unknown prior"):
        build_prior("d3", SPECIES, 5.0)


def test_element_reference_is_the_sum_of_the_atoms_energies_in_float64():
    prior = ElementReference(SPECIES, 5.0, [-13.6, -1029.5, -2041.25])
    energy = prior_energy(prior, POSITIONS)
    assert energy.dtype == torch.float64
    np.testing.assert_allclose(energy.numpy(), [-2041.25 - 2 * 13.6 - 1029.5, -27.2], rtol=1e-15)


def make_prior(name: str) -> Prior:
    """A prior with pairs of POSITIONS inside its onsets (ZBL: some below r_in = r0 / 2, some in the switch)."""
    if name == "core_repulsion":
        return CubicRepulsion(SPECIES, 5.0, ONSETS_A, 40.0)
    if name == "zbl_repulsion":
        return ZBLRepulsion(SPECIES, 5.0, ONSETS_A).double()
    return PairSpring(SPECIES, 5.0)


@pytest.mark.parametrize("name", ["core_repulsion", "zbl_repulsion", "spring"])
def test_prior_forces_are_minus_the_energy_gradient(name):
    prior = make_prior(name)
    model = build_tiny_model(seed=2).eval()
    model.priors["network_free"] = prior
    model.backbone.readout[-1].weight.data.zero_()
    model.backbone.readout[-1].bias.data.zero_()
    cell, pbc = torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool)

    def energy_of(positions: torch.Tensor) -> float:
        return float(model(positions, NUMBERS, BATCH, cell, pbc)[0].detach().sum())

    _, forces = model(POSITIONS, NUMBERS, BATCH, cell, pbc)
    step, numeric = 1e-5, torch.zeros_like(POSITIONS)
    for atom in range(len(NUMBERS)):
        for axis in range(3):
            up, down = POSITIONS.clone(), POSITIONS.clone()
            up[atom, axis] += step
            down[atom, axis] -= step
            numeric[atom, axis] = -(energy_of(up) - energy_of(down)) / (2 * step)
    np.testing.assert_allclose(forces.numpy(), numeric.numpy(), rtol=1e-6, atol=1e-8)
    assert forces.abs().max() > 0.1, "the prior pushes: the test can fail"


def test_the_cubic_repulsion_is_zero_with_zero_force_at_its_onset():
    prior = CubicRepulsion(SPECIES, 5.0, ONSETS_A, 40.0)
    hydrogens = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    model = build_tiny_model()
    batch = torch.zeros(2, dtype=torch.long)
    energy = prior(torch.tensor([1, 1]), torch.tensor([0, 0]), batch, model.edges(hydrogens, batch, 1), 1)
    (gradient,) = torch.autograd.grad(energy.sum(), hydrogens)
    assert float(energy.detach()) == 0.0 and float(gradient.abs().max()) == 0.0


def test_an_added_prior_survives_torchscript_export(tmp_path):
    model = build_tiny_model(seed=4).eval()
    model.set_core_repulsion(ONSETS_A, 40.0)
    model.priors["spring"] = PairSpring(SPECIES, model.cutoff)
    path = export_model(model, tmp_path / "p.pt")
    cell, pbc = torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool)
    eager = model(POSITIONS, NUMBERS, BATCH, cell, pbc)
    loaded = load_potential(path)(POSITIONS, NUMBERS, BATCH, cell, pbc)
    for expected, actual in zip(eager, loaded):
        torch.testing.assert_close(actual.detach(), expected.detach(), rtol=1e-12, atol=1e-12)
    without_spring = build_tiny_model(seed=4).eval()
    without_spring.set_core_repulsion(ONSETS_A, 40.0)
    assert not torch.allclose(without_spring(POSITIONS, NUMBERS, BATCH, cell, pbc)[0], eager[0])


def test_legacy_state_dict_keys_map_to_the_priors():
    state = build_tiny_model(seed=5).state_dict()
    legacy = {old: state[new] for old, new in LEGACY_KEYS.items()}
    legacy.update({key: value for key, value in state.items() if not key.startswith("priors.")})
    assert upgrade_state_dict(legacy).keys() == state.keys()
    model = build_tiny_model()
    model.load_state_dict(legacy)
    assert model.element_energies().equal(build_tiny_model(seed=5).element_energies())


# The ZBL screened nuclear repulsion, written out independently of the prior (numpy, the published constants).
def zbl_reference_ev(distance_a: float, z_i: int, z_j: int) -> float:
    screening = 0.46850 / (z_i**0.23 + z_j**0.23)
    x = distance_a / screening
    phi = (
        0.18175 * np.exp(-3.19980 * x)
        + 0.50986 * np.exp(-0.94229 * x)
        + 0.28022 * np.exp(-0.40290 * x)
        + 0.02817 * np.exp(-0.20162 * x)
    )
    return 14.399645 * z_i * z_j / distance_a * phi


def dimer(prior: Prior, z_a: int, z_b: int, distance_a: float) -> tuple[float, float]:
    """The prior's energy (eV) of one dimer at distance_a, and the force on the second atom along the axis (eV/A)."""
    positions = torch.tensor([[0.0, 0.0, 0.0], [distance_a, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    numbers, batch = torch.tensor([z_a, z_b]), torch.zeros(2, dtype=torch.long)
    species = build_tiny_model().species_table[numbers]
    energy = prior(numbers, species, batch, build_tiny_model().edges(positions, batch, 1), 1)
    if not energy.requires_grad:  # no pair inside its onset: nothing depends on the positions
        return float(energy[0]), 0.0
    (gradient,) = torch.autograd.grad(energy.sum(), positions)
    return float(energy[0].detach()), -float(gradient[1, 0])


@pytest.mark.parametrize(("z_a", "z_b", "distance"), [(1, 1, 0.3), (1, 1, 0.74), (6, 1, 0.2), (8, 8, 0.44)])
def test_zbl_below_its_inner_radius_is_the_published_formula(z_a, z_b, distance):
    prior = ZBLRepulsion(SPECIES, 5.0, ONSETS_A).double()  # r_in = r0 / 2: 0.75 (H-H), 0.5 (C-H), 0.7 (O-O)
    energy, _ = dimer(prior, z_a, z_b, distance)
    assert energy == pytest.approx(zbl_reference_ev(distance, z_a, z_b), rel=1e-6)
    assert energy > 1.0, "a few tenths of an Angstrom: several eV at least"


def test_zbl_is_switched_off_smoothly_and_exactly_zero_at_and_beyond_its_onset():
    prior = ZBLRepulsion(SPECIES, 5.0, ONSETS_A).double()
    onset = float(ONSETS_A[0, 0])  # H-H, 1.5 A
    for distance in (onset, onset + 1e-12, onset + 0.2, 4.99):
        assert dimer(prior, 1, 1, distance) == (0.0, 0.0), distance
    # Just inside: energy and force vanish continuously (quintic switch: E ~ (r0 - r)^3, F ~ (r0 - r)^2).
    energy, force = dimer(prior, 1, 1, onset - 1e-3)
    assert 0.0 < energy < 1e-7 and 0.0 < force < 1e-4
    # The switch lowers the ZBL energy monotonically from r_in to r0, the force stays repulsive.
    distances = np.linspace(0.5 * onset, onset - 1e-3, 40)
    energies, forces = zip(*(dimer(prior, 1, 1, r) for r in distances))
    assert np.all(np.diff(energies) < 0) and min(forces) > 0
    assert energies[0] == pytest.approx(zbl_reference_ev(0.5 * onset, 1, 1), rel=1e-6), "s(r_in) = 1"


def test_zbl_off_by_default_and_bad_settings_refused():
    assert ZBLRepulsion(SPECIES, 5.0).describe() == {}
    with pytest.raises(ValueError, match="cutoff"):
        ZBLRepulsion(SPECIES, 5.0, torch.full((3, 3), 5.0))
    with pytest.raises(ValueError, match="inner fraction"):
        ZBLRepulsion(SPECIES, 5.0, ONSETS_A, inner_fraction=1.0)
    described = ZBLRepulsion(SPECIES, 5.0, ONSETS_A).describe()
    assert described["inner_fraction"] == 0.5 and described["onsets_a"][0][0] == 1.5


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_exported_zbl_repulsion_equals_the_eager_model(tmp_path, dtype):
    model = build_tiny_model(seed=6).eval()
    model.priors["zbl_repulsion"] = ZBLRepulsion(SPECIES, model.cutoff, ONSETS_A).double()
    path = export_model(model, tmp_path / "zbl.pt", dtype=dtype)
    eager = model.to(torch.float32) if dtype == "float32" else model
    cell, pbc = torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool)
    squeezed = POSITIONS * 0.5  # every pair of the first structure well inside its onset
    expected = eager(squeezed, NUMBERS, BATCH, cell, pbc)
    loaded = load_potential(path)(squeezed, NUMBERS, BATCH, cell, pbc)
    tolerance = 1e-12 if dtype == "float64" else 1e-6
    for wanted, actual in zip(expected, loaded):
        torch.testing.assert_close(actual.detach().double(), wanted.detach().double(), rtol=tolerance, atol=tolerance)
    plain = build_tiny_model(seed=6).eval()
    assert float(expected[0].detach()[0]) > float(plain(squeezed, NUMBERS, BATCH, cell, pbc)[0].detach()[0]) + 100.0


def test_the_repulsion_comparison_example_prints_both_priors(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "compare_repulsion.py"
    spec = importlib.util.spec_from_file_location("compare_repulsion_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.compare(strength_ev_per_a3=50.0)
    for pair in ("H-H", "C-H", "O-O"):
        curve = [row for row in rows if row[0] == pair]
        cubic, zbl = np.array([row[3] for row in curve]), np.array([row[4] for row in curve])
        assert cubic[-1] == zbl[-1] == 0.0, "both zero at the onset"
        assert np.all(np.diff(cubic) < 0) and np.all(np.diff(zbl) < 0), "both repulsive below it"
    o_o = [row for row in rows if row[0] == "O-O"]
    assert o_o[0][1].endswith("(radii)") and o_o[0][4] > 10 * o_o[0][3], "ZBL far steeper for O-O at 0.2 A"
    assert example.main([]) == 0 and "ZBL switched" in capsys.readouterr().out
