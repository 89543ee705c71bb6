"""10 ps of Langevin MD at 300 K in OpenMM with the shipped ethanol potential (TorchForce).

Writes OUT/start.pdb (topology and first frame), OUT/trajectory.dcd (a frame every
100 steps), OUT/state.csv (StateDataReporter), reads the trajectory back with
mdtraj and prints steps/s. Usage:

    python examples/openmm_md.py [--potential potentials/ethanol.pt] [--structure FILE]
        [--picoseconds 10] [--precision double] [--out runs/openmm_md]
"""

import argparse
import sys
import time
from pathlib import Path

import mdtraj
import openmm
import openmm.app
from openmm import unit

from mlff.calculators.openmm import create_system, read_structure, topology_from_atoms
from mlff.dynamics import load_structure
from mlff.export import read_metadata

TIMESTEP_FS = 0.5
REPORT_EVERY = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--potential", default="potentials/ethanol.pt")
    parser.add_argument("--structure", default=None, help="PDB, SDF, XYZ file (default: the potential's start frame)")
    parser.add_argument("--picoseconds", type=float, default=10.0)
    parser.add_argument("--temperature-k", type=float, default=300.0)
    parser.add_argument("--precision", choices=["single", "double"], default=None, help="default: the file's dtype")
    parser.add_argument("--out", type=Path, default=Path("runs/openmm_md"))
    args = parser.parse_args(argv)

    metadata = read_metadata(args.potential)
    if args.structure is None:
        topology, positions = topology_from_atoms(load_structure(None, metadata), metadata["species"])
    else:
        topology, positions = read_structure(args.structure, metadata["species"])
    system = create_system(topology, args.potential, args.precision)
    integrator = openmm.LangevinMiddleIntegrator(
        args.temperature_k * unit.kelvin, 1.0 / unit.picosecond, TIMESTEP_FS * unit.femtosecond
    )
    simulation = openmm.app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(args.temperature_k * unit.kelvin)

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "start.pdb").open("w") as stream:
        openmm.app.PDBFile.writeFile(topology, positions, stream)
    steps = round(args.picoseconds * 1000.0 / TIMESTEP_FS)
    simulation.reporters.append(openmm.app.DCDReporter(str(args.out / "trajectory.dcd"), REPORT_EVERY))
    state_options = {"step": True, "time": True, "potentialEnergy": True, "temperature": True, "speed": True}
    simulation.reporters.append(
        openmm.app.StateDataReporter(str(args.out / "state.csv"), REPORT_EVERY, **state_options)
    )
    simulation.reporters.append(
        openmm.app.StateDataReporter(sys.stdout, steps // 10, totalSteps=steps, progress=True, **state_options)
    )
    started = time.perf_counter()
    simulation.step(steps)
    seconds = time.perf_counter() - started

    trajectory = mdtraj.load(str(args.out / "trajectory.dcd"), top=str(args.out / "start.pdb"))
    rate = steps / seconds
    print(f"{steps} steps in {seconds:.1f} s: {rate:.1f} steps/s, {rate * TIMESTEP_FS * 1e-6 * 86400.0:.2f} ns/day")
    print(f"trajectory: {trajectory.n_frames} frames of {trajectory.n_atoms} atoms ({args.out / 'trajectory.dcd'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
