"""Periodic systems (potential format v2): neighbours, invariances, forces and stress, the file, ASE, OpenMM.

The oracle for the pairs is vesin; forces and stress are checked against finite differences of the
energy, the potential file against the eager model, OpenMM against ASE.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from conftest import TINY_SPECIES, require_module, tiny_config

from mlff import MLFFCalculator
from mlff.export import export_model, load_potential, read_metadata
from mlff.export.committee import CommitteeModel
from mlff.models import EnergyModel, build_model
from mlff.models.neighbors import CELL_LIST_MIN_ATOMS, complete_cell, periodic_neighbor_pairs, perpendicular_widths
from mlff.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL

pytestmark = pytest.mark.usefixtures("single_thread")

LEGACY_POTENTIAL = Path(__file__).parent / "data" / "legacy" / "potential.pt"
CUTOFF = 5.0
TRICLINIC = np.array([[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 7.2]])


def periodic_model(seed: int = 0) -> EnergyModel:
    """The tiny EGNN (cutoff 5 A) with a large energy scale and no reference energies: forces of
    order 0.1 eV/A, so finite differences resolve them in float64."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(tiny_config(), TINY_SPECIES, [0.0, 0.0, 0.0], 50.0).eval()


@pytest.fixture(scope="module")
def model() -> EnergyModel:
    return periodic_model()


@pytest.fixture(scope="module")
def periodic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(periodic_model(), tmp_path_factory.mktemp("periodic") / "periodic.pt", config=tiny_config())


def random_atoms(num_atoms: int, cell: np.ndarray, pbc=True, seed: int = 0) -> Atoms:
    """Atoms of H, C, O at random fractional positions in [-0.5, 1.5) (so many lie outside the cell)."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(-0.5, 1.5, (num_atoms, 3)) @ cell
    return Atoms(numbers=rng.choice(TINY_SPECIES, num_atoms), positions=positions, cell=cell, pbc=pbc)


def tensors(atoms: Atoms) -> tuple[torch.Tensor, ...]:
    """The five forward arguments of one structure, float64."""
    return (
        torch.tensor(atoms.positions),
        torch.tensor(atoms.numbers),
        torch.zeros(len(atoms), dtype=torch.long),
        torch.tensor(np.asarray(atoms.cell))[None],
        torch.tensor(atoms.pbc)[None],
    )


def energy(model, atoms: Atoms) -> float:
    return model(*tensors(atoms))[0][0].item()


def supercell_check(model, atoms: Atoms) -> None:
    """A 2x2x2 supercell has 8 times the energy and the same forces per atom."""
    energy_one, forces_one = model(*tensors(atoms))
    big = atoms.repeat((2, 2, 2))
    energy_eight, forces_eight = model(*tensors(big))
    assert float(energy_eight[0]) == pytest.approx(8.0 * float(energy_one[0]), rel=1e-11)
    np.testing.assert_allclose(forces_eight[: len(atoms)].numpy(), forces_one.numpy(), rtol=1e-8, atol=1e-10)
    assert float(forces_one.abs().max()) > 1e-3


# Cells: large cubic (minimum image), small (image shifts: atoms meet their own images), triclinic large
# and small, a slab, a wire, and the cell list (> 512 atoms) in a triclinic box and a slab.
BOXES = {
    "cubic-minimum-image": (40, np.eye(3) * 11.0, [True, True, True]),
    "cubic-image-shifts": (20, np.diag([4.0, 5.0, 6.0]), [True, True, True]),
    "triclinic-large": (40, TRICLINIC * 1.6, [True, True, True]),
    "triclinic-small": (12, TRICLINIC * 0.5, [True, True, True]),
    "slab": (30, np.array([[6.0, 0.0, 0.0], [2.0, 7.0, 0.0], [0.0, 0.0, 20.0]]), [True, True, False]),
    "wire": (20, np.array([[3.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 12.0]]), [True, False, False]),
    "cell-list": (600, TRICLINIC * 2.5, [True, True, True]),
    "cell-list-slab": (600, np.array([[16.0, 0.0, 0.0], [3.0, 17.0, 0.0], [0.0, 0.0, 30.0]]), [True, True, False]),
}


@pytest.mark.parametrize("name", sorted(BOXES))
def test_pairs_shifts_and_distances_equal_vesin(name):
    vesin = require_module("vesin")
    num_atoms, cell, pbc = BOXES[name]
    atoms = random_atoms(num_atoms, cell, pbc, seed=len(name))
    positions, _, batch, cells, pbcs = tensors(atoms)
    widths = perpendicular_widths(complete_cell(cells[0], pbcs[0]))[pbcs[0]]
    # The cell-list boxes force that path with a lower threshold than the default (a smaller box).
    threshold = 512
    path = {"minimum-image": widths.min() > 2 * CUTOFF, "cell-list": num_atoms > threshold}
    assert path["cell-list"] == name.startswith("cell-list") and (widths.min() >= 3 * CUTOFF or not path["cell-list"])
    assert path["minimum-image"] != (name in ("cubic-image-shifts", "triclinic-small", "wire", "slab"))
    index, shifts, vectors, distances = periodic_neighbor_pairs(positions, batch, 1, CUTOFF, cells, pbcs, threshold)
    ours = np.column_stack([index.T.numpy(), np.round(shifts.numpy() @ np.linalg.inv(cell)), distances.numpy()])
    i, j, shift, distance = vesin.NeighborList(cutoff=CUTOFF, full_list=True).compute(
        points=atoms.positions, box=cell, periodic=pbc, quantities="ijSd"
    )
    theirs = np.column_stack([i, j, shift, distance])
    assert len(ours) == len(theirs) > 0
    ours, theirs = ours[np.lexsort(ours[:, :5].T[::-1])], theirs[np.lexsort(theirs[:, :5].T[::-1])]
    np.testing.assert_array_equal(ours[:, :5], theirs[:, :5])
    np.testing.assert_allclose(ours[:, 5], theirs[:, 5], rtol=1e-12)
    np.testing.assert_allclose(torch.linalg.vector_norm(vectors, dim=1).numpy(), distances.numpy())


@pytest.mark.parametrize("crystal", ["Cu", "Si", "NaCl"])
def test_pairs_of_real_crystals_equal_vesin(crystal):
    vesin = require_module("vesin")
    structure = {"Cu": bulk("Cu"), "Si": bulk("Si", "diamond", a=5.43), "NaCl": bulk("NaCl", "rocksalt", a=5.64)}
    atoms = structure[crystal].repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    positions, _, batch, cells, pbcs = tensors(atoms)
    index, _, _, distances = periodic_neighbor_pairs(positions, batch, 1, CUTOFF, cells, pbcs)
    i, j, distance = vesin.NeighborList(cutoff=CUTOFF, full_list=True).compute(
        points=atoms.positions, box=atoms.cell[:], periodic=True, quantities="ijd"
    )
    ours = sorted(zip(index[0].tolist(), index[1].tolist(), np.round(distances.numpy(), 9)))
    theirs = sorted(zip(i.tolist(), j.tolist(), np.round(distance, 9)))
    assert ours == theirs


def test_batches_mix_periodic_and_isolated_structures(model):
    first = random_atoms(10, TRICLINIC, seed=1)
    second = random_atoms(8, np.eye(3) * 6.0, pbc=False, seed=2)
    parts = [tensors(first), tensors(second)]
    positions = torch.cat([parts[0][0], parts[1][0]])
    numbers = torch.cat([parts[0][1], parts[1][1]])
    batch = torch.cat([parts[0][2], parts[1][2] + 1])
    energies, forces = model(
        positions, numbers, batch, torch.cat([parts[0][3], parts[1][3]]), torch.cat([parts[0][4], parts[1][4]])
    )
    for structure, (atoms, start) in enumerate(((first, 0), (second, 10))):
        alone_energy, alone_forces = model(*tensors(atoms))
        assert float(energies[structure].detach()) == pytest.approx(float(alone_energy[0].detach()), rel=1e-12)
        np.testing.assert_allclose(forces[start : start + len(atoms)].numpy(), alone_forces.numpy(), atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 0.5], ids=["minimum-image", "image-shifts"])
def test_energy_is_invariant_to_wrapping_and_translating(model, scale):
    atoms = random_atoms(14, TRICLINIC * scale * 1.5, seed=3)
    reference = energy(model, atoms)
    wrapped = atoms.copy()
    wrapped.wrap()
    moved = atoms.copy()
    moved.positions[[2, 5]] += np.array([[1, -2, 0], [0, 3, -1]]) @ np.asarray(atoms.cell)
    translated = atoms.copy()
    translated.positions += np.array([3.1, -7.4, 12.9])
    for other in (wrapped, moved, translated):
        assert energy(model, other) == pytest.approx(reference, rel=1e-12, abs=1e-12)
    _, forces = model(*tensors(atoms))
    _, forces_wrapped = model(*tensors(wrapped))
    np.testing.assert_allclose(forces_wrapped.numpy(), forces.numpy(), atol=1e-12)


def test_supercell_minimum_image_path(model):
    # 11 A > 2 cutoffs: minimum image for the cell; the 22 A, 240-atom supercell too.
    supercell_check(model, random_atoms(30, np.eye(3) * 11.0, seed=4))


def test_supercell_image_shift_path(model):
    # 4.5 A < cutoff: atoms meet several images of each other and of themselves.
    supercell_check(model, random_atoms(6, TRICLINIC * 0.65, seed=5))


def test_supercell_cell_list_path(model):
    # 300 atoms in a 16 A box (minimum image) against their 2400-atom supercell (cell list: > CELL_LIST_MIN_ATOMS).
    assert 300 <= CELL_LIST_MIN_ATOMS < 2400
    atoms = random_atoms(300, np.eye(3) * 16.0, seed=6)
    atoms.wrap()
    supercell_check(model, atoms)


def finite_difference_stress(model, atoms: Atoms, step: float = 1e-5) -> np.ndarray:
    """(1/V) dE/d(strain) [3, 3] by central differences of symmetric strains, eV/A^3."""
    stress = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            strain = np.zeros((3, 3))
            strain[a, b] += 0.5 * step
            strain[b, a] += 0.5 * step
            energies = []
            for sign in (1.0, -1.0):
                deformed = atoms.copy()
                deformed.set_cell(np.asarray(atoms.cell) @ (np.eye(3) + sign * strain), scale_atoms=True)
                energies.append(energy(model, deformed))
            stress[a, b] = (energies[0] - energies[1]) / (2 * step) / atoms.get_volume()
    return stress


@pytest.mark.parametrize("case", ["triclinic", "small-triclinic", "slab"], ids=["triclinic", "small-triclinic", "slab"])
def test_forces_and_stress_equal_finite_differences(model, case):
    cells = {"triclinic": (TRICLINIC * 1.5, True), "small-triclinic": (TRICLINIC * 0.6, True)}
    cell, pbc = cells.get(case, (np.array([[6.0, 0.0, 0.0], [2.0, 7.0, 0.0], [0.0, 0.0, 15.0]]), [True, True, False]))
    atoms = random_atoms(10, cell, pbc, seed=7)
    energies, forces, stress = model.energy_forces_stress(*tensors(atoms))
    step = 1e-5
    for atom, axis in ((0, 0), (3, 1), (7, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += step
        minus.positions[atom, axis] -= step
        expected = -(energy(model, plus) - energy(model, minus)) / (2 * step)
        assert float(forces[atom, axis]) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    expected_stress = finite_difference_stress(model, atoms)
    np.testing.assert_allclose(stress[0].numpy(), expected_stress, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(stress[0].numpy(), stress[0].numpy().T, atol=1e-14)
    assert np.abs(expected_stress).max() > 1e-6


def test_singular_cell_and_stress_of_isolated_atoms_are_errors(model, periodic_file):
    atoms = random_atoms(6, TRICLINIC, seed=8)
    flat = atoms.copy()
    flat.cell = [[5.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, 7.0]]
    with pytest.raises(ValueError, match="cell is singular"):
        model(*tensors(flat))
    isolated = atoms.copy()
    isolated.pbc = False
    with pytest.raises(ValueError, match="stress needs periodic structures"):
        model.energy_forces_stress(*tensors(isolated))
    potential = load_potential(periodic_file)
    with pytest.raises(ValueError, match="cell is singular"):
        potential(*tensors(flat))


def test_the_file_is_v2_and_equals_the_eager_model(model, periodic_file):
    metadata = read_metadata(periodic_file)
    assert metadata["format_version"] == 2 and metadata["periodic"] is True and metadata["stress"] is True
    # torch.jit.load alone runs it: no mlff needed.
    extra = {"mlff_metadata.json": ""}
    module = torch.jit.load(str(periodic_file), _extra_files=extra)
    assert json.loads(extra["mlff_metadata.json"])["periodic"] is True
    for atoms in (random_atoms(12, TRICLINIC * 0.6, seed=9), random_atoms(600, np.eye(3) * 16.0, seed=10)):
        eager = model.energy_forces_stress(*tensors(atoms))
        scripted = module.energy_forces_stress(*tensors(atoms))
        for mine, theirs in zip(scripted, eager):
            np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
        forward = module(*tensors(atoms))
        np.testing.assert_allclose(forward[1].numpy(), eager[1].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_format_v1_files_keep_refusing_periodic_input():
    potential = load_potential(LEGACY_POTENTIAL)
    assert potential.metadata["format_version"] == 1 and not potential.periodic and not potential.has_stress
    atoms = Atoms("CO", positions=[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]], cell=np.eye(3) * 10.0, pbc=True)
    with pytest.raises(ValueError, match="not supported by potential format v1"):
        potential(*tensors(atoms))
    with pytest.raises(ValueError, match="gives no stress"):
        potential.energy_forces_stress(*tensors(atoms))
    atoms.calc = MLFFCalculator(potential)
    with pytest.raises(ValueError, match="format v2 handles periodic"):
        atoms.get_potential_energy()


def test_a_committee_of_periodic_members_gives_their_mean(tmp_path):
    members = [periodic_model(0), periodic_model(1)]
    committee = torch.jit.script(CommitteeModel(members).eval())
    atoms = random_atoms(10, TRICLINIC * 0.6, seed=11)
    energies, forces, spread = committee.energy_forces_spread(*tensors(atoms))
    one, two = (member(*tensors(atoms)) for member in members)
    assert float(energies[0]) == pytest.approx(0.5 * float(one[0][0] + two[0][0]), rel=1e-12)
    np.testing.assert_allclose(forces.numpy(), 0.5 * (one[1] + two[1]).detach().numpy(), atol=1e-12)
    assert float(spread.max()) > 0


def test_ase_stress_cell_filter_and_npt(periodic_file):
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
    from ase.filters import FrechetCellFilter
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.optimize import FIRE

    atoms = random_atoms(8, TRICLINIC * 0.9, seed=12)
    atoms.calc = MLFFCalculator(periodic_file)
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), rtol=1e-5, atol=1e-8)
    relaxed = atoms.copy()
    relaxed.calc = MLFFCalculator(periodic_file)
    start_energy = relaxed.get_potential_energy()
    FIRE(FrechetCellFilter(relaxed), logfile=None).run(fmax=1e-4, steps=30)
    assert relaxed.get_potential_energy() < start_energy
    assert not np.allclose(relaxed.cell[:], atoms.cell[:])
    md = atoms.copy()
    md.calc = MLFFCalculator(periodic_file)
    thermalize_momenta(md, temperature_K=300, rng=np.random.default_rng(0))
    NPTBerendsen(
        md, timestep=0.5, temperature_K=300, pressure_au=0.0, taut=50.0, taup=200.0, compressibility_au=1e-4
    ).run(5)
    assert np.isfinite(md.get_positions()).all() and md.get_volume() != pytest.approx(atoms.get_volume(), rel=1e-12)


def test_isolated_atoms_have_no_stress(periodic_file):
    atoms = molecule("CH3OH")
    atoms.calc = MLFFCalculator(periodic_file)
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


# --- OpenMM -------------------------------------------------------------------------------------

METHANOL_NAMES = ["C", "O", "H1", "H2", "H3", "HO"]
METHANOL_BONDS = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5)]


def openmm_energy_forces(system, positions_nm: np.ndarray, groups=-1) -> tuple[float, np.ndarray]:
    """Energy (kJ/mol) and forces [P, 3] (kJ/mol/nm) of `system` on the Reference platform."""
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy_kj = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energy_kj, np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def test_periodic_torch_force_equals_ase(periodic_file):
    require_module("openmmtorch")
    openmmml = require_module("openmmml")
    from mlff.calculators.openmm import create_system, topology_from_atoms

    # A reduced triclinic box (OpenMM's form), 11-12 A wide: minimum image.
    cell = np.array([[11.0, 0.0, 0.0], [0.5, 10.5, 0.0], [0.3, -0.4, 11.2]])
    atoms = random_atoms(16, cell, seed=13)
    atoms.calc = MLFFCalculator(periodic_file)
    ase_energy, ase_forces = atoms.get_potential_energy(), atoms.get_forces()
    topology, positions = topology_from_atoms(atoms)
    positions_nm = np.asarray(positions.value_in_unit(positions.unit))
    for system in (
        create_system(topology, periodic_file),
        openmmml.MLPotential("mlff", modelPath=str(periodic_file)).createSystem(topology),
    ):
        assert system.usesPeriodicBoundaryConditions()
        energy_kj, forces = openmm_energy_forces(system, positions_nm)
        assert energy_kj == pytest.approx(ase_energy * EV_TO_KJ_PER_MOL, rel=1e-12)
        np.testing.assert_allclose(forces / EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, ase_forces, rtol=1e-9, atol=1e-12)


def solvated_methanol(box_nm: float) -> tuple:
    """Methanol (residue MOH) across the x = 0 face of a cubic box with 3 TIP3P waters: topology and positions (nm)."""
    import openmm.app
    from openmm import unit

    methanol = molecule("CH3OH")
    order = [int(np.flatnonzero(methanol.numbers == 6)[0]), int(np.flatnonzero(methanol.numbers == 8)[0])]
    order += [
        i
        for i in range(len(methanol))
        if i not in order and np.linalg.norm(methanol.positions[i] - methanol.positions[order[0]]) < 1.2
    ]
    order += [i for i in range(len(methanol)) if i not in order]
    methanol = methanol[order]
    methanol.positions -= methanol.positions.mean(axis=0)
    topology = openmm.app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("MOH", chain)
    atoms = [
        topology.addAtom(name, openmm.app.Element.getByAtomicNumber(int(z)), residue)
        for name, z in zip(METHANOL_NAMES, methanol.numbers)
    ]
    for first, second in METHANOL_BONDS:
        topology.addBond(atoms[first], atoms[second])
    water = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.9266, 0.0]])
    positions = [methanol.positions]
    for offset in ([6.0, 0.0, 0.0], [0.0, 6.4, 0.5], [-0.5, -6.0, 5.3]):
        residue = topology.addResidue("HOH", chain)
        oxygen = topology.addAtom("O", openmm.app.element.oxygen, residue)
        for name in ("H1", "H2"):
            topology.addBond(oxygen, topology.addAtom(name, openmm.app.element.hydrogen, residue))
        positions.append(water + np.array(offset))
    topology.setPeriodicBoxVectors(np.eye(3) * box_nm * unit.nanometer)
    return topology, np.concatenate(positions) * 0.1, methanol


def test_mixed_system_with_pme_and_a_molecule_split_across_the_box(periodic_file):
    require_module("openmmtorch")
    openmmml = require_module("openmmml")
    import openmm.app

    box_nm = 2.0
    topology, positions, methanol = solvated_methanol(box_nm)
    forcefield = openmm.app.ForceField(str(Path(__file__).parent / "data" / "methanol_mm.xml"), "tip3p.xml")
    mm_system = forcefield.createSystem(
        topology, nonbondedMethod=openmm.app.PME, nonbondedCutoff=0.9, constraints=None, rigidWater=False
    )
    mixed = openmmml.MLPotential("mlff", modelPath=str(periodic_file)).createMixedSystem(
        topology, mm_system, list(range(6)), forceGroup=1
    )
    methanol.calc = MLFFCalculator(periodic_file)
    whole_energy = methanol.get_potential_energy() * EV_TO_KJ_PER_MOL
    ml_energy, ml_forces = openmm_energy_forces(mixed, positions, groups={1})
    assert ml_energy == pytest.approx(whole_energy, rel=1e-12)
    # The molecule straddles x = 0: wrapping its atoms with x < 0 into the box splits it across the face.
    split = positions.copy()
    outside = np.flatnonzero(split[:6, 0] < 0)
    assert 0 < outside.size < 6
    split[outside, 0] += box_nm
    split_energy, split_forces = openmm_energy_forces(mixed, split, groups={1})
    assert split_energy == pytest.approx(whole_energy, rel=1e-12)
    np.testing.assert_allclose(split_forces, ml_forces, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        ml_forces[:6] / EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, methanol.get_forces(), rtol=1e-9, atol=1e-12
    )
    total_energy, _ = openmm_energy_forces(mixed, split)
    assert np.isfinite(total_energy)


def test_ase_engine_and_selection_keep_the_box(periodic_file):
    from mlff.dynamics import MDSettings
    from mlff.dynamics.ase_engine import ASEEngine
    from mlff.dynamics.selection import SelectionObserver

    box = random_atoms(8, TRICLINIC, seed=3)
    engine = ASEEngine(load_potential(periodic_file), [box], MDSettings(temperature_k=300.0, timestep_fs=0.5))
    (atoms,) = engine.atoms
    assert atoms.pbc.all()
    np.testing.assert_allclose(atoms.cell.array, TRICLINIC)
    isolated = box.copy()
    isolated.pbc = False
    isolated.calc = MLFFCalculator(periodic_file)
    periodic = box.copy()
    periodic.calc = MLFFCalculator(periodic_file)
    np.testing.assert_allclose(atoms.get_forces(apply_constraint=False), periodic.get_forces(), atol=1e-10)
    assert np.abs(periodic.get_forces() - isolated.get_forces()).max() > 1e-4, "the images act on the atoms"

    selection = SelectionObserver.for_run([box], {}, {}, spread_threshold_ev_per_a=None)
    selection.candidates.append(
        {
            "replica": 0,
            "positions_a": box.positions,
            "reason": "bond_deviation",
            "score": 1.0,
            "step": 1,
            "time_fs": 0.5,
            "force_spread_ev_per_a": float("nan"),
            "bond_deviation_a": 0.4,
        }
    )
    (candidate,) = selection.atoms()
    assert candidate.pbc.all()
    np.testing.assert_allclose(candidate.cell.array, TRICLINIC)
