"""An ASE calculator for closed-shell Kohn-Sham DFT through pyscf (default PBE/def2-SVP, rMD17's level).

ASE works in eV and Angstrom, pyscf in Hartree and Bohr: positions go in as Bohr
(Angstrom * ANGSTROM_TO_BOHR), the energy comes back as Hartree * HARTREE_TO_EV and the
forces as -gradient (Hartree/Bohr) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM. The same CODATA
2018 constants convert both ways, so the forces are the exact negative derivative of the
energy in eV/Angstrom (up to the SCF and grid tolerances).

pyscf is imported on the first calculation; thread counts are left to the caller
(`pyscf.lib.num_threads`, OMP_NUM_THREADS).
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculatorError, all_changes

from mlff.data.optional import import_optional
from mlff.units import ANGSTROM_TO_BOHR, HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV


@dataclass(frozen=True)
class PySCFSettings:
    """Level of theory and convergence of a restricted Kohn-Sham calculation.

    Attributes:
        xc: exchange-correlation functional (pyscf/libxc name).
        basis: basis set name (pyscf's library, e.g. "def2-svp", "sto-3g").
        auxbasis: auxiliary basis of the RI-J (density-fitted Coulomb) approximation, or None for the
            exact four-centre Coulomb. RI-J with Weigend's universal J basis (ORCA's def2/J) is what
            rMD17's ORCA labels used: with it pyscf reproduces their energies to a constant 0.8 meV
            (ethanol) and 1.3 meV (toluene) and their forces to 0.34-0.42 meV/A, against 6-10 meV and
            0.57-0.82 meV/A without, and a toluene gradient takes 0.76x the CPU time
            (`examples/learn/pbe_offset.py`).
        charge: total charge (e).
        conv_tol: SCF energy convergence, Hartree.
        conv_tol_grad: SCF orbital-gradient convergence (pyscf's norm, a.u.).
        max_cycle: SCF iterations before giving up (an error, never a silent label).
        grid_level: pyscf's DFT integration grid level (0-9).
        grid_response: include the response of the moving grid in the gradient, so the forces are the
            derivative of the energy that is reported (without it they differ by ~1e-4 eV/A).
        max_memory_mb: pyscf's memory limit, MB.
    """

    xc: str = "pbe"
    basis: str = "def2-svp"
    auxbasis: str | None = "def2-universal-jfit"
    charge: int = 0
    conv_tol: float = 1e-10
    conv_tol_grad: float = 1e-6
    max_cycle: int = 200
    grid_level: int = 3
    grid_response: bool = True
    max_memory_mb: int = 2000


class PySCFCalculator(Calculator):
    """Restricted Kohn-Sham energy (eV) and forces (eV/Angstrom) of a closed-shell molecule.

    The converged density matrix seeds the next SCF of the same molecule, which saves
    most iterations along an optimisation or an MD trajectory.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "forces"]

    def __init__(self, settings: PySCFSettings | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings or PySCFSettings()
        self._guess: tuple[tuple[int, ...], np.ndarray] | None = None

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        energy_hartree, gradient_hartree_per_bohr = self.energy_and_gradient(
            self.atoms.get_atomic_numbers(), self.atoms.get_positions()
        )
        self.results["energy"] = energy_hartree * HARTREE_TO_EV
        self.results["forces"] = -gradient_hartree_per_bohr * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM

    def energy_and_gradient(self, numbers: np.ndarray, positions_a: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (Hartree) and gradient [n, 3] (Hartree/Bohr) at `positions_a` [n, 3] Angstrom."""
        dft = import_optional("pyscf.dft", "the PBE/def2-SVP calculator")
        gto = import_optional("pyscf.gto", "the PBE/def2-SVP calculator")
        settings = self.settings
        numbers = np.asarray(numbers, dtype=np.int64)
        electrons = int(numbers.sum()) - settings.charge
        if electrons % 2:
            raise CalculatorError(
                f"{electrons} electrons: restricted Kohn-Sham needs a closed-shell molecule (even electron count)"
            )
        positions_bohr = np.asarray(positions_a, dtype=np.float64) * ANGSTROM_TO_BOHR
        mol = gto.M(
            atom=[(int(z), tuple(float(x) for x in xyz)) for z, xyz in zip(numbers, positions_bohr)],
            unit="Bohr",
            basis=settings.basis,
            charge=settings.charge,
            spin=0,
            verbose=0,
            max_memory=settings.max_memory_mb,
        )
        mf = dft.RKS(mol)
        mf.xc = settings.xc
        mf.conv_tol = settings.conv_tol
        mf.conv_tol_grad = settings.conv_tol_grad
        mf.max_cycle = settings.max_cycle
        mf.grids.level = settings.grid_level
        if settings.auxbasis is not None:
            mf = mf.density_fit(auxbasis=settings.auxbasis)
        key = tuple(int(z) for z in numbers)
        guess = self._guess[1] if self._guess is not None and self._guess[0] == key else None
        energy = float(mf.kernel(dm0=guess))
        if not mf.converged:
            self._guess = None
            raise CalculatorError(
                f"pyscf SCF ({settings.xc}/{settings.basis}) did not converge in {settings.max_cycle} cycles"
            )
        self._guess = (key, mf.make_rdm1())
        gradient = mf.nuc_grad_method()
        gradient.grid_response = settings.grid_response
        gradient.verbose = 0
        return energy, np.asarray(gradient.kernel(), dtype=np.float64)
