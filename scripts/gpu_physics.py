"""Physics checks of the potential files on one device (CUDA in a GPU session; runs on CPU too).

The test suite runs on CPU; a GPU session (scripts/gpu_check.sh) runs this on CUDA for what the
suite cannot reach there: every shipped potential on the device equals itself on the CPU; forces equal
-dE/dx by central differences; energies are invariant (and forces equivariant) under rotation and
translation; a periodic file's 2x2x2 supercell has 8x the energy, wrapping atoms changes nothing, and
its stress equals finite strain differences; and the torch-compiled MD engine equals the eager one over
100 float64 steps. All in float64. Writes a JSON of every check (value, tolerance, pass) and exits 1 if
one failed.

    python scripts/gpu_physics.py --device cuda -o gpu_physics.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_stress
from scipy.spatial.transform import Rotation

from mlff.calculators import MLFFCalculator
from mlff.dynamics import MDSettings
from mlff.dynamics.compiled import CompiledTorchEngine
from mlff.dynamics.torch_engine import TorchEngine
from mlff.export import export_model, load_potential
from mlff.models import ModelConfig, build_model
from mlff.resources import shipped_potentials

CHECKS: list[dict] = []


def record(name: str, value: float, tolerance: float) -> None:
    """One check: |value| <= tolerance."""
    CHECKS.append({"check": name, "value": float(value), "tolerance": tolerance, "pass": bool(abs(value) <= tolerance)})
    print(f"{'ok  ' if CHECKS[-1]['pass'] else 'FAIL'} {name}: {value:.3e} (tolerance {tolerance:.0e})", flush=True)


def start_atoms(potential) -> Atoms:
    reference = potential.metadata["reference"]
    return Atoms(numbers=reference["atomic_numbers"], positions=np.array(reference["start_positions"])[0])


def molecule_checks(name: str, device: str, rng: np.random.Generator) -> None:
    """The shipped potential `name` on `device` against the CPU, finite differences and invariances."""
    cpu, dev = load_potential(name, dtype="float64"), load_potential(name, device=device, dtype="float64")
    atoms = start_atoms(cpu)
    e0, f0 = cpu.energy_and_forces(atoms.numbers, atoms.positions)
    e1, f1 = dev.energy_and_forces(atoms.numbers, atoms.positions)
    record(f"{name}: energy on {device} - on cpu (eV)", e1 - e0, 1e-9)
    record(f"{name}: forces on {device} - on cpu (eV/A)", np.abs(f1 - f0).max(), 1e-9)
    step, worst = 1e-5, 0.0
    for atom in rng.choice(len(atoms), 3, replace=False):
        for axis in range(3):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[atom, axis] += step
            minus[atom, axis] -= step
            expected = -(dev.energy_and_forces(atoms.numbers, plus)[0] - dev.energy_and_forces(atoms.numbers, minus)[0])
            worst = max(worst, abs(f1[atom, axis] - expected / (2 * step)))
    record(f"{name}: forces - central differences (eV/A)", worst, 1e-5)
    rotation = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    moved = atoms.positions @ rotation.T + rng.normal(size=3) * 3.0
    e2, f2 = dev.energy_and_forces(atoms.numbers, moved)
    record(f"{name}: energy rotated and translated - original (eV)", e2 - e1, 1e-9)
    record(f"{name}: forces rotated - rotated forces (eV/A)", np.abs(f2 - f1 @ rotation.T).max(), 1e-8)


def periodic_checks(device: str, rng: np.random.Generator) -> None:
    """A small random EGNN exported as a periodic (format v2) file, on `device`."""
    config = ModelConfig(backbone_options={"hidden": 16, "layers": 2}, encoding_size=8, dtype="float64")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(config, [1, 6, 8], [0.0, 0.0, 0.0], 50.0).eval()
    with tempfile.TemporaryDirectory() as folder:
        potential = load_potential(export_model(model, Path(folder) / "periodic.pt", config=config), device=device)
    cell = np.array([[7.0, 0.0, 0.0], [1.2, 6.5, 0.0], [-0.8, 0.9, 7.2]]) * 0.9  # under twice the cutoff
    atoms = Atoms(numbers=rng.choice([1, 6, 8], 12), positions=rng.uniform(0, 1, (12, 3)) @ cell, cell=cell, pbc=True)

    def energy(structure: Atoms) -> float:
        return potential.energy_forces_stress_of(
            structure.numbers, structure.positions, structure.cell[:], structure.pbc
        )[0]

    e, f, stress = potential.energy_forces_stress_of(atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc)
    big = atoms.repeat((2, 2, 2))
    e8, f8, _ = potential.energy_forces_stress_of(big.numbers, big.positions, big.cell[:], big.pbc)
    record(f"periodic: 2x2x2 supercell energy / 8 - cell's (eV), {device}", e8 / 8 - e, 1e-8)
    record(f"periodic: supercell forces - cell's (eV/A), {device}", np.abs(f8[: len(atoms)] - f).max(), 1e-8)
    wrapped = atoms.copy()
    wrapped.positions += rng.integers(-2, 3, (len(atoms), 3)) @ cell
    record(f"periodic: energy wrapped - original (eV), {device}", energy(wrapped) - e, 1e-8)
    atoms.calc = MLFFCalculator(potential)
    expected = calculate_numerical_stress(atoms, eps=1e-5, voigt=False)
    record(f"periodic: stress - finite strain (eV/A^3), {device}", np.abs(stress - expected).max(), 1e-7)


def compiled_md_check(device: str) -> None:
    """The torch-compiled engine (CUDA graphs on a GPU) against the eager one, 4 aspirin replicas, 100 NVE steps."""
    potential = load_potential("aspirin", device=device, dtype="float64")
    atoms = start_atoms(potential)
    settings = MDSettings(temperature_k=300.0, thermostat="nve", timestep_fs=0.5, seed=1)
    eager, compiled = (
        TorchEngine(potential, [atoms] * 4, settings),
        CompiledTorchEngine(potential, [atoms] * 4, settings),
    )
    eager.advance(100)
    compiled.advance(100)
    drift = (compiled.state.positions - eager.state.positions).abs().max().item()
    record(f"compiled - eager MD positions after 100 float64 steps (A), {device}", drift, 1e-8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--molecules", nargs="+", default=None, help="shipped potentials (default: all)")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled-engine check")
    parser.add_argument("-o", "--output", default=None, help="JSON of the checks")
    args = parser.parse_args(argv)
    CHECKS.clear()
    rng = np.random.default_rng(0)
    for name in args.molecules or shipped_potentials():
        molecule_checks(name, args.device, rng)
    periodic_checks(args.device, rng)
    if not args.no_compiled:
        compiled_md_check(args.device)
    failed = [check["check"] for check in CHECKS if not check["pass"]]
    summary = {"device": args.device, "torch": torch.__version__, "checks": CHECKS, "failed": failed}
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name(args.device)
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1))
    print(f"{len(CHECKS) - len(failed)} of {len(CHECKS)} checks passed on {args.device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
