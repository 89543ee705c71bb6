"""An ASE calculator on top of a potential file (format v1: isolated molecules).

    from mlff import MLFFCalculator
    atoms.calc = MLFFCalculator("potential.pt")
    atoms.get_potential_energy()   # eV
    atoms.get_forces()             # eV/Angstrom

Energy and forces come from one call and ASE caches them until the atoms change.
"""

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from mlff.export.load import Potential, load_potential


class MLFFCalculator(Calculator):
    """ASE calculator for an mlff potential: energy, free_energy (equal to it) and forces.

    Args:
        potential: a potential file path or a loaded `Potential` (which is then
            moved and converted in place).
        device: where to evaluate ("cpu", "cuda", ...).
        dtype: network dtype, "float64" (default: smooth enough for finite
            differences and tight optimisations) or "float32".
        kwargs: passed to ase.calculators.calculator.Calculator.

    Attributes:
        seconds_in_potential: wall time spent inside the potential so far (for throughput reports).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        potential: str | os.PathLike | Potential,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(potential, Potential):
            self.potential = potential.to(device=device, dtype=dtype)
        else:
            self.potential = load_potential(potential, device=device, dtype=dtype)
        self.seconds_in_potential = 0.0

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] | None = None,
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        """Compute energy (eV) and forces (eV/Angstrom) of `atoms` into self.results.

        Raises:
            ValueError: the atoms are periodic, contain an element the potential
                does not know, or have NaN/inf positions.
        """
        super().calculate(atoms, properties, system_changes)
        check_atoms(self.atoms, self.potential.species)
        started = time.perf_counter()
        energy, forces = self.potential.energy_and_forces(self.atoms.get_atomic_numbers(), self.atoms.get_positions())
        self.seconds_in_potential += time.perf_counter() - started
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def check_atoms(atoms: Atoms, species: Sequence[int]) -> None:
    """Raise ValueError naming the problem if `atoms` cannot be evaluated by a v1 potential.

    Args:
        atoms: the structure.
        species: atomic numbers the potential knows.
    """
    if atoms.pbc.any():
        raise ValueError(
            f"periodic boundary conditions (atoms.pbc = {atoms.pbc.tolist()}) are not supported: "
            "potential format v1 handles isolated molecules; set atoms.pbc = False"
        )
    numbers = atoms.get_atomic_numbers()
    unknown = sorted(set(int(z) for z in numbers) - set(species))
    if unknown:
        known = " ".join(chemical_symbols[z] for z in species)
        names = ", ".join(_element_name(z) for z in unknown)
        raise ValueError(f"element(s) {names} not in the potential's species ({known})")
    positions = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(f"positions of atom(s) {bad.tolist()} are NaN or inf")


def _element_name(atomic_number: int) -> str:
    """Symbol and atomic number, e.g. "F (Z=9)"."""
    if 0 < atomic_number < len(chemical_symbols):
        return f"{chemical_symbols[atomic_number]} (Z={atomic_number})"
    return f"Z={atomic_number}"
