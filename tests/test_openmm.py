"""OpenMM: TorchForce and openmm-ml energies/forces equal the ASE calculator's, NVE, mixed ML/MM, errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app
import pytest
from ase import Atoms
from conftest import load_script, require_module
from openmm import unit

from mlff import MLFFCalculator
from mlff.calculators.openmm import (
    add_ml_force,
    create_system,
    read_structure,
    topology_from_atoms,
    torch_force_module,
)
from mlff.export import read_metadata
from mlff.resources import potential_path
from mlff.units import ANGSTROM_TO_NM, EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL

pytestmark = pytest.mark.usefixtures("single_thread")

openmmml = require_module("openmmml")
require_module("openmmtorch")

DATA = Path(__file__).parent / "data"
ETHANOL = potential_path("ethanol")
TOLERANCE = {"single": 1e-5, "double": 1e-9}
DTYPES = {"single": "float32", "double": "float64"}
METHANOL_NAMES = ["C", "O", "H1", "H2", "H3", "HO"]
METHANOL_BONDS = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 5)]


@pytest.fixture
def methanol_atoms(methanol) -> Atoms:
    numbers, positions = methanol
    return Atoms(numbers=numbers, positions=positions)


def openmm_energy_forces(
    system: openmm.System, positions_nm: np.ndarray, platform: str = "Reference", groups: int | set[int] = -1
) -> tuple[float, np.ndarray]:
    """Energy (kJ/mol) and forces [P, 3] (kJ/mol/nm) of `system` at `positions_nm`."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions_nm * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


def ase_energy_forces(potential, atoms: Atoms, precision: str) -> tuple[float, np.ndarray]:
    """The ASE calculator's energy (kJ/mol) and forces (kJ/mol/nm)."""
    atoms = atoms.copy()
    atoms.calc = MLFFCalculator(potential, dtype=DTYPES[precision])
    return (
        atoms.get_potential_energy() * EV_TO_KJ_PER_MOL,
        atoms.get_forces() * EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM,
    )


def relative(difference: np.ndarray | float, reference: np.ndarray | float) -> float:
    return float(np.linalg.norm(difference) / np.linalg.norm(reference))


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("precision", ["single", "double"])
def test_torch_force_equals_ase(potential_file, methanol_atoms, platform, precision):
    topology, positions = topology_from_atoms(methanol_atoms)
    system = create_system(topology, potential_file, precision=precision)
    energy, forces = openmm_energy_forces(system, positions.value_in_unit(unit.nanometer), platform)
    ase_energy, ase_forces = ase_energy_forces(potential_file, methanol_atoms, precision)
    assert relative(forces - ase_forces, ase_forces) < TOLERANCE[precision]
    assert relative(energy - ase_energy, ase_energy) < TOLERANCE[precision]


@pytest.mark.parametrize("precision", ["single", "double"])
def test_shipped_ethanol_potential_equals_ase(precision):
    reference = read_metadata(ETHANOL)["reference"]
    atoms = Atoms(numbers=reference["atomic_numbers"], positions=reference["start_positions"][0])
    topology, positions = topology_from_atoms(atoms, species=[1, 6, 8])
    system = create_system(topology, ETHANOL, precision=precision)
    energy, forces = openmm_energy_forces(system, positions.value_in_unit(unit.nanometer), "CPU")
    ase_energy, ase_forces = ase_energy_forces(ETHANOL, atoms, precision)
    assert relative(forces - ase_forces, ase_forces) < TOLERANCE[precision]
    assert relative(energy - ase_energy, ase_energy) < TOLERANCE[precision]


def test_ml_subset_forces_and_zero_forces_elsewhere(potential_file, methanol_atoms, water):
    water_numbers, water_positions = water
    combined = methanol_atoms + Atoms(numbers=water_numbers, positions=water_positions + [0.0, 5.0, 0.0])
    topology, positions = topology_from_atoms(combined)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    ml_atoms = [0, 1, 2, 3, 4, 5]
    add_ml_force(system, topology, potential_file, ml_atoms, "double")
    energy, forces = openmm_energy_forces(system, positions.value_in_unit(unit.nanometer))
    ase_energy, ase_forces = ase_energy_forces(potential_file, methanol_atoms, "double")
    assert relative(forces[ml_atoms] - ase_forces, ase_forces) < 1e-9
    assert energy == pytest.approx(ase_energy, rel=1e-12)
    np.testing.assert_array_equal(forces[6:], 0.0)


def test_module_outputs_openmm_units(potential_file, methanol_atoms):
    import torch

    module = torch_force_module(potential_file, methanol_atoms.numbers, precision="double")
    positions = torch.tensor(methanol_atoms.positions * ANGSTROM_TO_NM)
    energy, forces = module(positions)
    ase_energy, ase_forces = ase_energy_forces(potential_file, methanol_atoms, "double")
    assert energy.dtype == torch.float64 and energy.dim() == 0 and forces.shape == (6, 3)
    assert float(energy) == pytest.approx(ase_energy, rel=1e-12)
    np.testing.assert_allclose(forces.numpy(), ase_forces, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("precision", ["single", "double"])
def test_openmmml_potential_equals_ase(potential_file, methanol_atoms, precision):
    topology, positions = topology_from_atoms(methanol_atoms)
    potential = openmmml.MLPotential("mlff", modelPath=str(potential_file))
    system = potential.createSystem(topology, precision=precision)
    energy, forces = openmm_energy_forces(system, positions.value_in_unit(unit.nanometer), "CPU")
    ase_energy, ase_forces = ase_energy_forces(potential_file, methanol_atoms, precision)
    assert relative(forces - ase_forces, ase_forces) < TOLERANCE[precision]
    assert relative(energy - ase_energy, ase_energy) < TOLERANCE[precision]


def test_openmmml_constructor_precision_is_the_default(potential_file, methanol_atoms):
    topology, positions = topology_from_atoms(methanol_atoms)
    system = openmmml.MLPotential("mlff", modelPath=str(potential_file), precision="single").createSystem(topology)
    _, forces = openmm_energy_forces(system, positions.value_in_unit(unit.nanometer))
    _, single = ase_energy_forces(potential_file, methanol_atoms, "single")
    _, double = ase_energy_forces(potential_file, methanol_atoms, "double")
    assert relative(forces - single, single) < 1e-5
    assert relative(forces - double, double) > 1e-9


def test_openmmml_loads_a_shipped_potential_by_name():
    reference = read_metadata(ETHANOL)["reference"]
    atoms = Atoms(numbers=reference["atomic_numbers"], positions=reference["start_positions"][0])
    topology, positions = topology_from_atoms(atoms)
    by_name = openmmml.MLPotential("mlff", modelPath="ethanol").createSystem(topology)
    by_path = openmmml.MLPotential("mlff", modelPath=str(ETHANOL)).createSystem(topology)
    named, pathed = (
        openmm_energy_forces(system, positions.value_in_unit(unit.nanometer)) for system in (by_name, by_path)
    )
    assert named[0] == pathed[0]
    np.testing.assert_array_equal(named[1], pathed[1])
    with pytest.raises(FileNotFoundError, match="shipped: aspirin, benzene, ethanol"):
        openmmml.MLPotential("mlff", modelPath="ethanoll")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "needs modelPath"),
        ({"modelPath": "x.pt", "precison": "single"}, "unknown argument"),
        ({"modelPath": "x.pt", "precision": "half"}, "precision must be"),
    ],
)
def test_openmmml_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        openmmml.MLPotential("mlff", **arguments)


def test_nve_energy_drift_is_bounded(potential_file, methanol_atoms):
    drift = nve_drift_per_atom_kj_per_mol(potential_file, methanol_atoms, steps=1000)
    assert drift < 1e-3


@pytest.mark.slow
def test_nve_energy_drift_2ps_shipped_ethanol():
    reference = read_metadata(ETHANOL)["reference"]
    atoms = Atoms(numbers=reference["atomic_numbers"], positions=reference["start_positions"][0])
    assert nve_drift_per_atom_kj_per_mol(ETHANOL, atoms, steps=4000) < 0.05


def nve_drift_per_atom_kj_per_mol(potential, atoms: Atoms, steps: int) -> float:
    """Largest |E_total(t) - E_total(0)| per atom (kJ/mol) over `steps` Verlet steps of 0.5 fs from 300 K.

    No CMMotionRemover: it would remove the initial centre-of-mass kinetic energy at the first step.
    """
    topology, positions = topology_from_atoms(atoms)
    system = create_system(topology, potential, precision="double", remove_cm_motion=False)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    totals = []
    for _ in range(steps // 50 + 1):
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
        integrator.step(50)
    totals = np.asarray(totals)
    assert np.isfinite(totals).all()
    return float(np.abs(totals - totals[0]).max()) / len(atoms)


def solvated_methanol(methanol_atoms: Atoms, waters: int = 3) -> tuple[openmm.app.Topology, np.ndarray]:
    """Methanol (residue MOH) and `waters` TIP3P waters around it: topology and positions [P, 3] nm."""
    topology = openmm.app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("MOH", chain)
    atoms = [
        topology.addAtom(name, openmm.app.Element.getByAtomicNumber(int(z)), residue)
        for name, z in zip(METHANOL_NAMES, methanol_atoms.numbers)
    ]
    for first, second in METHANOL_BONDS:
        topology.addBond(atoms[first], atoms[second])
    water = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.9266, 0.0]])
    offsets = np.array([[3.2, 0.0, 0.0], [0.0, 3.4, 0.5], [-0.5, -1.0, 3.3], [-3.3, 0.3, -0.4]])[:waters]
    positions = [methanol_atoms.positions]
    for offset in offsets:
        residue = topology.addResidue("HOH", chain)
        oxygen = topology.addAtom("O", openmm.app.element.oxygen, residue)
        for name in ("H1", "H2"):
            topology.addBond(oxygen, topology.addAtom(name, openmm.app.element.hydrogen, residue))
        positions.append(water + offset)
    return topology, np.concatenate(positions) * ANGSTROM_TO_NM


def test_mixed_system_is_ml_plus_mm(potential_file, methanol_atoms):
    forcefield = openmm.app.ForceField(str(DATA / "methanol_mm.xml"), "tip3p.xml")
    topology, positions = solvated_methanol(methanol_atoms)
    options = {"nonbondedMethod": openmm.app.NoCutoff, "constraints": None, "rigidWater": False}
    mm_system = forcefield.createSystem(topology, **options)
    ml_atoms = list(range(len(methanol_atoms)))
    potential = openmmml.MLPotential("mlff", modelPath=str(potential_file))
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms, forceGroup=1, precision="double")

    total_energy, total_forces = openmm_energy_forces(mixed, positions)
    ml_energy, ml_forces = openmm_energy_forces(mixed, positions, groups={1})
    mm_energy, mm_forces = openmm_energy_forces(mixed, positions, groups={0})
    assert np.isfinite(total_forces).all()

    ase_energy, ase_forces = ase_energy_forces(potential_file, methanol_atoms, "double")
    assert relative(ml_forces[ml_atoms] - ase_forces, ase_forces) < 1e-9
    assert ml_energy == pytest.approx(ase_energy, rel=1e-12)
    np.testing.assert_array_equal(ml_forces[len(ml_atoms) :], 0.0)

    # MM part: everything in the MM system except the molecule's interactions with itself.
    alone_topology, _ = solvated_methanol(methanol_atoms, waters=0)
    alone = forcefield.createSystem(alone_topology, **options)
    full_energy, full_forces = openmm_energy_forces(mm_system, positions)
    alone_energy, alone_forces = openmm_energy_forces(alone, positions[ml_atoms])
    expected_forces = full_forces.copy()
    expected_forces[ml_atoms] -= alone_forces
    np.testing.assert_allclose(mm_forces, expected_forces, rtol=1e-9, atol=1e-6)
    assert mm_energy == pytest.approx(full_energy - alone_energy, rel=1e-9, abs=1e-6)
    np.testing.assert_allclose(total_forces, ml_forces + mm_forces, rtol=1e-9, atol=1e-6)
    assert total_energy == pytest.approx(ml_energy + mm_energy, rel=1e-12)


def test_unknown_element_is_named(potential_file, methanol_atoms):
    fluorinated = methanol_atoms.copy()
    fluorinated.numbers[5] = 9
    with pytest.raises(ValueError, match=r"F \(Z=9\) not in the potential's species"):
        topology_from_atoms(fluorinated, species=[1, 6, 8])
    topology, _ = topology_from_atoms(fluorinated)
    with pytest.raises(ValueError, match=r"F \(Z=9\)"):
        create_system(topology, potential_file)
    with pytest.raises(ValueError, match=r"F \(Z=9\)"):
        openmmml.MLPotential("mlff", modelPath=str(potential_file)).createSystem(topology)


def test_periodic_box_is_refused_by_a_format_v1_file(methanol_atoms):
    potential_file = DATA / "legacy" / "potential.pt"
    periodic = methanol_atoms.copy()
    periodic.cell = [20.0, 20.0, 20.0]
    periodic.pbc = True
    topology, _ = topology_from_atoms(periodic)
    assert topology.getPeriodicBoxVectors() is not None
    with pytest.raises(ValueError, match="periodic box"):
        create_system(topology, potential_file)
    with pytest.raises(ValueError, match="periodic box"):
        openmmml.MLPotential("mlff", modelPath=str(potential_file)).createSystem(topology)


def test_periodic_mm_system_is_refused_in_a_mixed_system_by_a_format_v1_file(methanol_atoms):
    potential_file = DATA / "legacy" / "potential.pt"
    forcefield = openmm.app.ForceField(str(DATA / "methanol_mm.xml"), "tip3p.xml")
    topology, _ = solvated_methanol(methanol_atoms)
    topology.setPeriodicBoxVectors(np.eye(3) * 2.0 * unit.nanometer)
    mm_system = forcefield.createSystem(topology, nonbondedMethod=openmm.app.CutoffPeriodic, nonbondedCutoff=0.9)
    potential = openmmml.MLPotential("mlff", modelPath=str(potential_file))
    with pytest.raises(ValueError, match="periodic box"):
        potential.createMixedSystem(topology, mm_system, list(range(6)))


def test_bad_precision_and_partly_periodic_atoms(potential_file, methanol_atoms):
    topology, _ = topology_from_atoms(methanol_atoms)
    with pytest.raises(ValueError, match="precision must be"):
        create_system(topology, potential_file, precision="half")
    partly = methanol_atoms.copy()
    partly.cell = [20.0, 20.0, 20.0]
    partly.pbc = [True, False, False]
    with pytest.raises(ValueError, match="partly periodic"):
        topology_from_atoms(partly)


SDF_METHANOL = """methanol
  test

  6  5  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.4300    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600    1.0300    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600   -0.5100    0.8900 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.3600   -0.5100   -0.8900 H   0  0  0  0  0  0  0  0  0  0  0  0
    1.7500    0.9000    0.0500 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
  1  5  1  0
  2  6  1  0
M  END
$$$$
"""


@pytest.mark.parametrize("suffix", [".pdb", ".xyz", ".sdf"])
def test_read_structure(tmp_path, methanol_atoms, suffix):
    import ase.io

    path = tmp_path / f"methanol{suffix}"
    if suffix == ".sdf":
        path.write_text(SDF_METHANOL)
    elif suffix == ".pdb":
        topology, positions = topology_from_atoms(methanol_atoms)
        with path.open("w") as stream:
            openmm.app.PDBFile.writeFile(topology, positions, stream)
    else:
        ase.io.write(path, methanol_atoms)
    topology, positions = read_structure(path, species=[1, 6, 8])
    numbers = [atom.element.atomic_number for atom in topology.atoms()]
    assert numbers == methanol_atoms.numbers.tolist()
    np.testing.assert_allclose(positions.value_in_unit(unit.nanometer), methanol_atoms.positions * 0.1, atol=2e-4)
    with pytest.raises(ValueError, match=r"O \(Z=8\)"):
        read_structure(path, species=[1, 6])


def test_read_structure_refuses_pdb_atoms_dropped_by_openmm(tmp_path, methanol_atoms):
    import ase.io

    path = tmp_path / "duplicate_names.pdb"
    ase.io.write(path, methanol_atoms)
    with pytest.raises(ValueError, match="duplicate atom names"):
        read_structure(path)


def test_read_structure_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="structure file not found"):
        read_structure(tmp_path / "missing.pdb")


def test_openmmml_plugin_imports_no_torch():
    code = (
        "import sys\n"
        "import mlff.calculators.openmmml_plugin\n"
        "assert 'torch' not in sys.modules, 'the plugin module imported torch'\n"
        "assert 'openmm' not in sys.modules, 'the plugin module imported openmm'\n"
        "import openmmml\n"
        "assert 'mlff' in openmmml.MLPotential._implFactories\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bench_openmm_command(potential_file, methanol_atoms, tmp_path, capsys):
    import json

    import ase.io

    from mlff.cli.main import main

    ase.io.write(tmp_path / "methanol.xyz", methanol_atoms)
    output = tmp_path / "openmm.json"
    arguments = ["bench", "openmm", str(potential_file), "--structure", f"methanol={tmp_path / 'methanol.xyz'}"]
    assert main(arguments + ["--steps", "5", "--warmup", "2", "--rounds", "2", "-o", str(output)]) == 0
    assert "steps/s" in capsys.readouterr().out
    rows = json.loads(output.read_text())
    assert [row["engine"] for row in rows] == ["torchforce", "pythonforce", "ase"]
    assert all(row["steps_per_second"] > 0 and row["atoms"] == 6 for row in rows)
    assert rows[2]["ratio_to_ase"] == 1.0


def test_python_force_equals_torch_force(potential_file, methanol_atoms):
    from mlff import load_potential
    from mlff.bench.openmm import python_force_system

    topology, positions = topology_from_atoms(methanol_atoms)
    positions_nm = positions.value_in_unit(unit.nanometer)
    python_energy, python_forces = openmm_energy_forces(
        python_force_system(load_potential(potential_file), methanol_atoms), positions_nm, "CPU"
    )
    torch_energy, torch_forces = openmm_energy_forces(create_system(topology, potential_file), positions_nm, "CPU")
    assert python_energy == pytest.approx(torch_energy, rel=1e-12)
    assert relative(python_forces - torch_forces, torch_forces) < 1e-9


def test_openmm_md_example(potential_file, methanol_atoms, tmp_path, capsys):
    import ase.io

    ase.io.write(tmp_path / "methanol.xyz", methanol_atoms)
    example = load_script(Path(__file__).parents[1] / "examples" / "openmm_md.py", "openmm_md_example")
    arguments = ["--potential", str(potential_file), "--structure", str(tmp_path / "methanol.xyz")]
    assert example.main(arguments + ["--picoseconds", "0.1", "--out", str(tmp_path / "md")]) == 0
    assert "trajectory: 2 frames of 6 atoms" in capsys.readouterr().out


def test_module_refuses_a_wrong_particle_count(potential_file, methanol_atoms):
    import torch

    module = torch_force_module(potential_file, methanol_atoms.numbers, [0, 1, 2, 3, 4, 5], num_particles=9)
    with pytest.raises(torch.jit.Error, match="expected positions of 9 particles, got 6"):
        module(torch.zeros(6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="must lie in 0..5"):
        torch_force_module(potential_file, methanol_atoms.numbers, [1, 2, 3, 4, 5, 6], num_particles=6)
