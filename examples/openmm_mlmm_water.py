"""ML/MM in OpenMM: a shipped MD17 molecule (ML) in a periodic TIP3P water box (MM, PME).

The molecule (default: the shipped `ethanol` potential's start frame) is solvated with
`Modeller.addSolvent`, the MM System is built with PME, and `MLPotential("mlff").createMixedSystem`
replaces the molecule's internal MM terms with the potential (mechanical embedding: the
molecule-water interactions stay MM charges and Lennard-Jones). Runs Langevin MD at 300 K
(0.5 fs: the molecule's hydrogens are free, water is rigid) with a DCDReporter and a
StateDataReporter, reads the trajectory back with mdtraj and prints steps/s and whether the
molecule stayed whole (OUT/mlmm.json: sizes, steps/s and steps per CPU-second, the molecule's
largest bond deviation, the mean temperature, threads, versions).

The molecule's MM parameters (needed only for its interactions with water) are OPLS-like charges
and Lennard-Jones by role: O, H on O, C bonded to O, other C, H on C, N. A shipped potential
of format v1 (no periodic support) is re-exported to a v2 file in OUT first. Usage:

    python examples/openmm_mlmm_water.py [--potential ethanol] [--structure FILE] [--picoseconds 10]
        [--padding-nm 1.0] [--precision double] [--threads 1] [--out runs/openmm_mlmm_water]
"""

import argparse
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.app
import torch
from ase import Atoms
from openmm import unit
from openmmml import MLPotential

from mlff.calculators.openmm import topology_from_atoms
from mlff.data.reference import find_bonds
from mlff.dynamics import load_structure
from mlff.export import read_metadata, resolve_potential
from mlff.export.deploy import convert_potential
from mlff.threads import set_user_threads
from mlff.utils import write_json

TIMESTEP_FS = 0.5
RESIDUE = "MOL"
# (charge e, sigma nm, epsilon kJ/mol) by role; OPLS-AA-like values for alcohols and alkanes.
ROLE_PARAMETERS = {
    "O": (-0.683, 0.312, 0.71128),
    "HO": (0.418, 0.0, 0.0),
    "CO": (0.145, 0.350, 0.276144),
    "C": (-0.180, 0.350, 0.276144),
    "HC": (0.060, 0.250, 0.12552),
    "N": (-0.500, 0.325, 0.71128),
    "HN": (0.300, 0.0, 0.0),
}


def molecule_bonds(atoms: Atoms) -> list[tuple[int, int]]:
    """Bonded pairs (i < j): mlff's convention (covalent radii plus 0.3 A), as the stability benchmark's."""
    return [(int(i), int(j)) for i, j in find_bonds(atoms.get_atomic_numbers(), atoms.get_positions())]


def largest_bond_deviation(trajectory: mdtraj.Trajectory, bonds: list[tuple[int, int]]) -> float:
    """Largest |r - r0| (A) of the molecule's bonds over the frames (minimum image), r0 in the first frame.

    Above 0.5 A the MDsim criterion of the stability benchmark calls the molecule collapsed.
    """
    lengths = mdtraj.compute_distances(trajectory, np.asarray(bonds), periodic=True) * 10.0
    return float(np.abs(lengths - lengths[0]).max())


def mean_temperature(state_csv: Path) -> float:
    """Mean of the StateDataReporter's "Temperature (K)" column (the whole box, K)."""
    header = state_csv.read_text().splitlines()[0].lstrip("#").replace('"', "").split(",")
    column = header.index("Temperature (K)")
    return float(np.loadtxt(state_csv, delimiter=",", comments="#", usecols=column, ndmin=1).mean())


def atom_roles(atoms: Atoms, bonds: list[tuple[int, int]]) -> list[str]:
    """The ROLE_PARAMETERS key of each atom, from its element and bonded neighbours."""
    symbols = atoms.get_chemical_symbols()
    neighbours: list[set[str]] = [set() for _ in symbols]
    for i, j in bonds:
        neighbours[i].add(symbols[j])
        neighbours[j].add(symbols[i])
    roles = []
    for symbol, near in zip(symbols, neighbours):
        if symbol == "H":
            roles.append("HO" if "O" in near else "HN" if "N" in near else "HC")
        elif symbol == "C":
            roles.append("CO" if "O" in near else "C")
        elif symbol in ("O", "N"):
            roles.append(symbol)
        else:
            raise ValueError(f"no MM parameters for element {symbol} in this example")
    return roles


def molecule_forcefield_xml(atoms: Atoms, bonds: list[tuple[int, int]]) -> str:
    """An OpenMM force-field XML with one residue template for the molecule (non-bonded terms only).

    Charges are shifted evenly to make the molecule neutral, so PME sees a neutral box. The
    molecule's bonded terms are not needed: createMixedSystem replaces them with the potential.
    """
    roles = atom_roles(atoms, bonds)
    charges = np.array([ROLE_PARAMETERS[role][0] for role in roles])
    charges -= charges.mean()
    symbols = atoms.get_chemical_symbols()
    masses = atoms.get_masses()
    types = [
        f'  <Type name="mol-{k}" class="mol-{k}" element="{s}" mass="{m:.4f}"/>'
        for k, (s, m) in enumerate(zip(symbols, masses))
    ]
    residue_atoms = [f'   <Atom name="{s}{k + 1}" type="mol-{k}"/>' for k, s in enumerate(symbols)]
    residue_bonds = [f'   <Bond from="{i}" to="{j}"/>' for i, j in bonds]
    nonbonded = [
        f'  <Atom type="mol-{k}" charge="{q:.6f}" sigma="{sigma}" epsilon="{epsilon}"/>'
        for k, (q, (_, sigma, epsilon)) in enumerate(zip(charges, (ROLE_PARAMETERS[role] for role in roles)))
    ]
    return "\n".join(
        ["<ForceField>", " <AtomTypes>", *types, " </AtomTypes>", " <Residues>", f'  <Residue name="{RESIDUE}">']
        + residue_atoms
        + residue_bonds
        + ["  </Residue>", " </Residues>", ' <NonbondedForce coulomb14scale="0.833333" lj14scale="0.5">']
        + nonbonded
        + [" </NonbondedForce>", "</ForceField>", ""]
    )


def periodic_potential(name_or_path: str, out: Path) -> str:
    """A path to a potential that takes periodic input: the file itself, or a v2 re-export of a v1 file in `out`."""
    path = resolve_potential(name_or_path)
    if read_metadata(path).get("periodic"):
        return str(path)
    converted = out / f"{path.stem}.v2.pt"
    if not converted.exists():
        convert_potential(path, converted, "torchscript")
    return str(converted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--potential", default="ethanol", help="a shipped potential's name or a .pt path")
    parser.add_argument(
        "--structure", default=None, help="the molecule (any file ASE reads; default: the potential's start)"
    )
    parser.add_argument("--picoseconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=None, help="overrides --picoseconds")
    parser.add_argument("--padding-nm", type=float, default=1.0, help="water between the molecule and the box faces")
    parser.add_argument("--temperature-k", type=float, default=300.0)
    parser.add_argument("--report-every", type=int, default=100)
    parser.add_argument("--minimize-steps", type=int, default=200, help="energy minimisation before MD")
    parser.add_argument("--precision", choices=["single", "double"], default=None, help="default: the file's dtype")
    parser.add_argument("--threads", type=int, default=1, help="OpenMM CPU platform and torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/openmm_mlmm_water"))
    args = parser.parse_args(argv)
    set_user_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    potential_path = periodic_potential(args.potential, args.out)
    metadata = read_metadata(potential_path)
    molecule = load_structure(args.structure, metadata)
    bonds = molecule_bonds(molecule)
    topology, positions = topology_from_atoms(molecule, metadata["species"])
    atoms = list(topology.atoms())
    for i, j in bonds:
        topology.addBond(atoms[i], atoms[j])
    next(topology.residues()).name = RESIDUE
    xml_path = args.out / "molecule_mm.xml"
    xml_path.write_text(molecule_forcefield_xml(molecule, bonds))
    forcefield = openmm.app.ForceField(str(xml_path), "tip3p.xml")

    modeller = openmm.app.Modeller(topology, positions)
    modeller.addSolvent(forcefield, model="tip3p", padding=args.padding_nm * unit.nanometer)
    # 0.9 nm, or under half the box for a small test box (OpenMM's limit for PME).
    box_nm = min(
        vector[k].value_in_unit(unit.nanometer) for k, vector in enumerate(modeller.topology.getPeriodicBoxVectors())
    )
    cutoff_nm = min(0.9, 0.49 * box_nm)
    mm_system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=openmm.app.PME,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=None,
        rigidWater=True,
    )
    ml_atoms = list(range(len(molecule)))
    system = MLPotential("mlff", modelPath=potential_path).createMixedSystem(
        modeller.topology, mm_system, ml_atoms, precision=args.precision
    )
    integrator = openmm.LangevinMiddleIntegrator(
        args.temperature_k * unit.kelvin, 1.0 / unit.picosecond, TIMESTEP_FS * unit.femtosecond
    )
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = openmm.app.Simulation(modeller.topology, system, integrator, platform, {"Threads": str(args.threads)})
    simulation.context.setPositions(modeller.positions)
    # addSolvent leaves close water contacts; a short minimisation keeps the first steps sane.
    simulation.minimizeEnergy(maxIterations=args.minimize_steps)
    simulation.context.setVelocitiesToTemperature(args.temperature_k * unit.kelvin)
    with (args.out / "start.pdb").open("w") as stream:
        state = simulation.context.getState(getPositions=True)
        openmm.app.PDBFile.writeFile(modeller.topology, state.getPositions(), stream)

    steps = args.steps if args.steps is not None else round(args.picoseconds * 1000.0 / TIMESTEP_FS)
    every = max(1, min(args.report_every, steps))
    simulation.reporters.append(openmm.app.DCDReporter(str(args.out / "trajectory.dcd"), every))
    state_options = {"step": True, "time": True, "potentialEnergy": True, "temperature": True, "speed": True}
    simulation.reporters.append(openmm.app.StateDataReporter(str(args.out / "state.csv"), every, **state_options))
    simulation.reporters.append(
        openmm.app.StateDataReporter(sys.stdout, max(1, steps // 10), totalSteps=steps, progress=True, **state_options)
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    simulation.step(steps)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    trajectory = mdtraj.load(str(args.out / "trajectory.dcd"), top=str(args.out / "start.pdb"))
    waters = modeller.topology.getNumResidues() - 1
    rate = steps / seconds
    atoms_total = modeller.topology.getNumAtoms()
    print(f"{len(ml_atoms)} ML atoms in {waters} TIP3P waters ({atoms_total} atoms, PME, cutoff {cutoff_nm:.2f} nm)")
    print(f"{steps} steps in {seconds:.1f} s: {rate:.1f} steps/s, {rate * TIMESTEP_FS * 1e-6 * 86400.0:.2f} ns/day")
    print(f"trajectory: {trajectory.n_frames} frames of {trajectory.n_atoms} atoms ({args.out / 'trajectory.dcd'})")
    deviation = largest_bond_deviation(trajectory, bonds)
    temperature = mean_temperature(args.out / "state.csv")
    print(f"molecule: largest bond deviation {deviation:.3f} A; box mean temperature {temperature:.1f} K")
    result = {
        "potential": str(args.potential),
        "ml_atoms": len(ml_atoms),
        "waters": waters,
        "atoms": atoms_total,
        "cutoff_nm": cutoff_nm,
        "steps": steps,
        "timestep_fs": TIMESTEP_FS,
        "wall_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "steps_per_second": rate,
        "steps_per_cpu_second": steps / cpu_seconds,
        "ns_per_day": rate * TIMESTEP_FS * 1e-6 * 86400.0,
        "trajectory_frames": trajectory.n_frames,
        "largest_bond_deviation_a": deviation,
        "mean_temperature_k": temperature,
        "threads": args.threads,
        "precision": args.precision or metadata.get("dtype"),
        "openmm": openmm.__version__,
        "torch": torch.__version__,
    }
    write_json(args.out / "mlmm.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
