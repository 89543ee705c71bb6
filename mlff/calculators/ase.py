"""An ASE calculator on top of a potential file (molecules; periodic cells with format v2).

    from mlff import MLFFCalculator
    atoms.calc = MLFFCalculator("ethanol")          # a shipped potential by name, or a file path
    atoms.get_potential_energy()   # eV
    atoms.get_forces()             # eV/Angstrom
    atoms.get_stress()             # eV/A^3, Voigt order xx yy zz yz xz xy (periodic atoms, format v2)

Energy and forces come from one call and ASE caches them until the atoms change. The potential
runs in its file's dtype unless `dtype` says otherwise (the same policy as every mlff entry point).
"""

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlff.export.load import Potential, load_potential
from mlff.threads import apply_thread_policy
from mlff.utils import check_species


class MLFFCalculator(Calculator):
    """ASE calculator for an mlff potential: energy, free_energy (equal to it), forces and stress.

    Periodic atoms (any `atoms.pbc`) need a format v2 file; their `stress` is (1/V) dE/d(strain)
    in eV/A^3 (ASE's sign and Voigt order xx yy zz yz xz xy), so cell filters
    (`ase.filters.FrechetCellFilter`) and NPT dynamics run on it. Isolated atoms have no stress
    (ASE raises PropertyNotImplementedError), nor do periodic atoms of a committee file or whose
    cell has no volume (a slab without its vacuum vector).

    A committee file (`mlff.export.committee`) also gives `results["force_spread"]`: [n] eV/A, each
    atom's norm over x, y, z of the standard deviation of the members' forces (the committee's
    uncertainty); energy and forces are the members' mean.

    Args:
        potential: a shipped potential's name ("ethanol"; `mlff.resources.shipped_potentials()`),
            a potential file path, or a loaded `Potential` (which is then moved and converted in place).
        device: where to evaluate ("cpu", "cuda", ...).
        dtype: network dtype, "float32" or "float64"; None (default) keeps the file's. float64
            gives forces smooth enough for finite differences and tight optimisations.
        kwargs: passed to ase.calculators.calculator.Calculator.

    Torch's CPU thread count follows `mlff.threads.apply_thread_policy` for the atoms it is given
    (one thread for small molecules) unless the user set it (`mlff --threads`, OMP_NUM_THREADS).

    Attributes:
        seconds_in_potential: wall time spent inside the potential so far (for throughput reports).

    Raises:
        FileNotFoundError: `potential` is neither a file nor a shipped name (the message lists them).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "force_spread"]

    def __init__(
        self,
        potential: str | os.PathLike | Potential,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(potential, Potential):
            self.potential = potential.to(device=device, dtype=dtype)
        else:
            self.potential = load_potential(potential, device=device, dtype=dtype)
        self.seconds_in_potential = 0.0
        self._threads_sized_for: int | None = None
        if self.atoms is not None:
            self._size_threads(len(self.atoms))

    def _size_threads(self, num_atoms: int) -> None:
        """Apply the thread policy when the number of atoms changes (so once for an MD run)."""
        if num_atoms != self._threads_sized_for:
            apply_thread_policy(num_atoms)
            self._threads_sized_for = num_atoms

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] | None = None,
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        """Compute energy (eV), forces (eV/Angstrom) and, for periodic atoms, stress (eV/A^3) into self.results.

        Raises:
            ValueError: the atoms are periodic and the file is format v1, contain an element the
                potential does not know, have NaN/inf positions, or a singular periodic cell.
        """
        super().calculate(atoms, properties, system_changes)
        check_atoms(self.atoms, self.potential.species, periodic=self.potential.periodic)
        self._size_threads(len(self.atoms))
        started = time.perf_counter()
        numbers, positions = self.atoms.get_atomic_numbers(), self.atoms.get_positions()
        pbc = np.asarray(self.atoms.pbc, dtype=bool)
        cell = np.asarray(self.atoms.cell, dtype=np.float64) if pbc.any() else None
        stress = None
        if self.potential.is_committee:
            energy, forces, spread = self.potential.energy_forces_spread_of(numbers, positions, cell, pbc)
        elif cell is not None and self.potential.has_stress and abs(np.linalg.det(cell)) > 0.0:
            energy, forces, stress = self.potential.energy_forces_stress_of(numbers, positions, cell, pbc)
        else:
            energy, forces = self.potential.energy_and_forces(numbers, positions, cell, pbc)
        self.seconds_in_potential += time.perf_counter() - started
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        if stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if self.potential.is_committee:
            self.results["force_spread"] = spread


def check_atoms(atoms: Atoms, species: Sequence[int], periodic: bool = False) -> None:
    """Raise ValueError naming the problem if `atoms` cannot be evaluated by the potential.

    Args:
        atoms: the structure.
        species: atomic numbers the potential knows.
        periodic: whether the potential handles periodic cells (format v2); False refuses any pbc.
    """
    if atoms.pbc.any() and not periodic:
        raise ValueError(
            f"periodic boundary conditions (atoms.pbc = {atoms.pbc.tolist()}) are not supported: "
            "potential format v1 handles isolated molecules; set atoms.pbc = False or re-export the "
            "potential with this mlff (format v2 handles periodic cells)"
        )
    check_species(atoms.get_atomic_numbers(), species)
    positions = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(f"positions of atom(s) {bad.tolist()} are NaN or inf")
