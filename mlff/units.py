"""Every unit constant mlff uses, in one place.

Inside mlff (and in ASE) lengths are Angstrom, energies eV, forces eV/Angstrom,
times fs. MD17 files are kcal/mol and kcal/mol/Angstrom; OpenMM works in nm
and kJ/mol. Convert at the boundary with the constants below, never inline.
"""

# CODATA 2018: elementary charge (C) times Avogadro's number, over 1000 J/kJ.
EV_TO_KJ_PER_MOL: float = 96.48533212331002
KCAL_TO_KJ: float = 4.184
KCAL_PER_MOL_TO_EV: float = KCAL_TO_KJ / EV_TO_KJ_PER_MOL
EV_TO_KCAL_PER_MOL: float = 1.0 / KCAL_PER_MOL_TO_EV

NM_TO_ANGSTROM: float = 10.0
ANGSTROM_TO_NM: float = 0.1

# Boltzmann constant in eV/K (CODATA 2018, exact).
BOLTZMANN_EV_PER_K: float = 8.617333262e-5

EV_TO_MEV: float = 1000.0

# Time: MD steps are in fs; trajectories (mdtraj, OpenMM) and reports in ps; throughput in ns/day.
FS_PER_PS: float = 1000.0
FS_PER_NS: float = 1.0e6
SECONDS_PER_DAY: float = 86400.0

# OpenMM force unit: eV/Angstrom -> kJ/mol/nm (an energy factor over a length factor).
EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM: float = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM

# MD in eV, Angstrom, amu, fs: an acceleration of 1 eV/(Angstrom amu) is 9.648533e-3 Angstrom/fs^2
# (eV/amu = 96.485 kJ/g = 9.6485e7 m^2/s^2); kinetic energy 0.5 m v^2 in amu Angstrom^2/fs^2
# divided by this constant is eV.
EV_PER_ANGSTROM_AMU_TO_ANGSTROM_PER_FS2: float = EV_TO_KJ_PER_MOL * 1e-4

# e^2 / (4 pi eps0) in eV Angstrom (CODATA 2018: e exact, eps0 = 8.8541878128e-12 F/m):
# two unit charges 1 A apart repel with 14.4 eV (the ZBL core repulsion, mlff.models.priors.zbl).
COULOMB_EV_ANGSTROM: float = 14.39964547842567

# Atomic units (CODATA 2018): quantum-chemistry codes (pyscf) work in Hartree and Bohr.
HARTREE_TO_EV: float = 27.211386245988
BOHR_TO_ANGSTROM: float = 0.529177210903
ANGSTROM_TO_BOHR: float = 1.0 / BOHR_TO_ANGSTROM
# A gradient in Hartree/Bohr is HARTREE_TO_EV / BOHR_TO_ANGSTROM eV/Angstrom (51.42 eV/A per Hartree/Bohr).
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM: float = HARTREE_TO_EV / BOHR_TO_ANGSTROM


def ns_per_day(steps_per_second: float, timestep_fs: float) -> float:
    """Simulated nanoseconds per wall-clock day of an MD run at `steps_per_second` steps of `timestep_fs` fs."""
    return steps_per_second * timestep_fs / FS_PER_NS * SECONDS_PER_DAY
