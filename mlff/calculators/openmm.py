"""OpenMM integration: a potential file as an `openmmtorch.TorchForce`, and topologies.

    from mlff.calculators.openmm import create_system, read_structure
    topology, positions = read_structure("ethanol.xyz", species=[1, 6, 8])
    system = create_system(topology, "ethanol")   # a shipped potential by name, or a file path

The TorchForce holds a TorchScript wrapper (`OpenMMPotentialModule`) around the
potential's module: OpenMM's positions (nm) go in, energy (kJ/mol) and forces
(kJ/mol/nm) come out, computed by the potential's own autograd, so OpenMM runs
no second backward pass and every step stays inside OpenMM's C++ loop. A periodic System (box
vectors on the topology, or a periodic force such as PME) gets a periodic TorchForce: OpenMM's box
vectors (nm) are the module's second input, and the ML atoms interact with the nearest images of
each other (a format v2 file; v1 files handle isolated molecules and are refused at set-up). The
network runs in the file's dtype unless a precision is given ("single" float32, "double" float64).
"""

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
import openmm.app
import torch
from ase import Atoms
from openmm import unit

from mlff.export.load import Potential, load_potential, torchscript_without_deprecation_warning
from mlff.units import ANGSTROM_TO_NM, EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM
from mlff.utils import check_species

PRECISIONS: dict[str, torch.dtype] = {"single": torch.float32, "double": torch.float64}


class OpenMMPotentialModule(torch.nn.Module):
    """TorchScript-able wrapper: OpenMM units and atom selection around a potential module.

    forward(positions [P, 3] nm, box_vectors [3, 3] nm or None) -> (energy [] float64 kJ/mol,
    forces [P, 3] float64 kJ/mol/nm), P the number of particles in the OpenMM System. Only the ML
    atoms are passed to the potential; the forces on all other particles are zero. A periodic
    module needs the box vectors (rows a, b, c, as OpenMM passes them) and evaluates the ML atoms
    in that fully periodic box.

    Args:
        module: the potential's TorchScript module (format v1 forward), already in `dtype`.
        atomic_numbers: [n] atomic numbers of the ML atoms.
        ml_atoms: [n] particle indices of the ML atoms in the System, or None when all
            P = n particles are ML atoms (in order).
        num_particles: P.
        dtype: the potential's network dtype (positions are converted to it).
        periodic: whether OpenMM passes box vectors (the System uses periodic boundary conditions).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        atomic_numbers: Sequence[int],
        ml_atoms: Sequence[int] | None,
        num_particles: int,
        dtype: torch.dtype,
        periodic: bool = False,
    ) -> None:
        super().__init__()
        self.potential = module
        self.periodic = bool(periodic)
        self.num_particles = int(num_particles)
        self.select = ml_atoms is not None
        indices = list(range(len(atomic_numbers))) if ml_atoms is None else [int(i) for i in ml_atoms]
        self.register_buffer("ml_atoms", torch.tensor(indices, dtype=torch.long))
        self.register_buffer("atomic_numbers", torch.tensor([int(z) for z in atomic_numbers], dtype=torch.long))
        self.register_buffer("batch", torch.zeros(len(indices), dtype=torch.long))
        self.register_buffer("cell", torch.zeros(1, 3, 3, dtype=dtype))
        self.register_buffer("pbc", torch.zeros(1, 3, dtype=torch.bool))
        self.length_scale = NM_TO_ANGSTROM
        self.energy_scale = EV_TO_KJ_PER_MOL
        self.force_scale = EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM

    def forward(
        self, positions: torch.Tensor, box_vectors: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.size(0) != self.num_particles:
            raise ValueError(
                "expected positions of " + str(self.num_particles) + " particles, got " + str(positions.size(0))
            )
        coordinates = positions.detach()
        if self.select:
            coordinates = coordinates.index_select(0, self.ml_atoms)
        coordinates = coordinates.to(self.cell.dtype) * self.length_scale
        cell = self.cell
        pbc = self.pbc
        if self.periodic:
            if box_vectors is None:
                raise ValueError("a periodic module needs the box vectors: setUsesPeriodicBoundaryConditions(True)")
            cell = (box_vectors.detach().to(self.cell.dtype) * self.length_scale).reshape(1, 3, 3)
            pbc = torch.ones_like(self.pbc)
        energy, forces = self.potential(coordinates, self.atomic_numbers, self.batch, cell, pbc)
        forces = forces.to(positions.dtype) * self.force_scale
        if self.select:
            forces = torch.zeros_like(positions).index_copy(0, self.ml_atoms, forces)
        return energy.detach().sum() * self.energy_scale, forces


def precision_dtype(precision: str | None, potential: Potential) -> torch.dtype:
    """The network dtype for an OpenMM-style precision: "single" float32, "double" float64, None the file's."""
    if precision is None:
        return potential.dtype
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'single' or 'double' (or None for the file's dtype), got {precision!r}")
    return PRECISIONS[precision]


def torch_force_module(
    potential: str | os.PathLike | Potential,
    atomic_numbers: Sequence[int],
    ml_atoms: Sequence[int] | None = None,
    num_particles: int | None = None,
    precision: str | None = None,
    periodic: bool = False,
) -> torch.jit.ScriptModule:
    """The scripted `OpenMMPotentialModule` for a potential file and a set of atoms.

    Args:
        potential: a shipped potential's name, a potential file or a loaded `Potential` (left
            unchanged: it is copied).
        atomic_numbers: [n] atomic numbers of the ML atoms, checked against the species.
        ml_atoms: [n] particle indices of the ML atoms, or None for all particles.
        num_particles: particles in the System (default n).
        precision: "single" (float32 network), "double" (float64) or None (the file's dtype).
        periodic: a module for a periodic System (box vectors as second input; a format v2 file).

    Raises:
        ValueError: periodic with a format v1 file, an AOTInductor package (`--format aoti`: not
            TorchScript, which is what a TorchForce runs), or atoms the potential does not know.
    """
    numbers = [int(z) for z in atomic_numbers]
    loaded = potential if isinstance(potential, Potential) else load_potential(potential)
    if loaded.metadata.get("container") == "aoti":
        raise ValueError(
            "an AOTInductor package (mlff export --format aoti) cannot run in OpenMM's TorchForce, which "
            "takes TorchScript: give the TorchScript potential (mlff export without --format)"
        )
    if periodic:
        check_periodic_support(loaded)
    check_species(numbers, loaded.species)
    dtype = precision_dtype(precision, loaded)
    module = _module_copy(loaded, dtype)
    if ml_atoms is not None and len(ml_atoms) != len(numbers):
        raise ValueError(f"{len(ml_atoms)} ML atom indices for {len(numbers)} atomic numbers")
    total = len(numbers) if num_particles is None else int(num_particles)
    if ml_atoms is not None and (min(ml_atoms, default=0) < 0 or max(ml_atoms, default=-1) >= total):
        raise ValueError(f"ML atom indices must lie in 0..{total - 1}")
    wrapper = OpenMMPotentialModule(module, numbers, ml_atoms, total, dtype, periodic)
    with torchscript_without_deprecation_warning():
        return torch.jit.script(wrapper.eval())


def _module_copy(potential: Potential, dtype: torch.dtype) -> torch.jit.ScriptModule:
    """A CPU copy of the potential's module in `dtype`, parameters frozen (the caller's is untouched)."""
    module = copy.deepcopy(potential.module).to(device="cpu", dtype=dtype).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def create_torch_force(
    potential: str | os.PathLike | Potential,
    atomic_numbers: Sequence[int],
    ml_atoms: Sequence[int] | None = None,
    num_particles: int | None = None,
    precision: str | None = None,
    force_group: int = 0,
    periodic: bool = False,
) -> openmm.Force:
    """An `openmmtorch.TorchForce` computing the potential's energy and forces.

    Arguments as `torch_force_module`; `force_group` is the OpenMM force group. The force outputs
    its own forces (`setOutputsForces(True)`) and uses periodic boundary conditions when `periodic`.
    """
    openmmtorch = _import_openmmtorch()
    module = torch_force_module(potential, atomic_numbers, ml_atoms, num_particles, precision, periodic)
    force = openmmtorch.TorchForce(module)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setForceGroup(int(force_group))
    return force


def _import_openmmtorch():
    """The openmmtorch module, or ImportError saying how to install it."""
    try:
        import openmmtorch
    except ImportError as error:
        raise ImportError(
            "openmm-torch is not installed: pip install 'mlff[openmm-torch-cpu]' for the CPU build, "
            "or conda install -c conda-forge openmm-torch for CUDA"
        ) from error
    return openmmtorch


def add_ml_force(
    system: openmm.System,
    topology: openmm.app.Topology,
    potential: str | os.PathLike | Potential,
    ml_atoms: Sequence[int] | None = None,
    precision: str | None = None,
    force_group: int = 0,
) -> openmm.Force:
    """Add the potential as a TorchForce acting on `ml_atoms` (None: all atoms) of `system`.

    The force is periodic when the system or the topology is (`uses_periodic_box`); a periodic
    topology's box becomes the system's default box when the system has none of its own forces.

    Raises:
        ValueError: the system or topology is periodic and the file is format v1 (isolated
            molecules only), an atom has no element or one outside the potential's species,
            or the topology and system disagree on the number of atoms.
    """
    periodic = uses_periodic_box(system, topology)
    loaded = potential if isinstance(potential, Potential) else load_potential(potential)
    if periodic:
        check_periodic_support(loaded)
        box = topology.getPeriodicBoxVectors()
        if box is not None and not system.usesPeriodicBoundaryConditions():
            system.setDefaultPeriodicBoxVectors(*box)
    atoms = list(topology.atoms())
    if len(atoms) != system.getNumParticles():
        raise ValueError(f"the topology has {len(atoms)} atoms but the system {system.getNumParticles()} particles")
    selected = [atoms[i] for i in ml_atoms] if ml_atoms is not None else atoms
    numbers = topology_atomic_numbers(selected)
    indices = None if ml_atoms is None else [int(i) for i in ml_atoms]
    force = create_torch_force(loaded, numbers, indices, system.getNumParticles(), precision, force_group, periodic)
    system.addForce(force)
    return force


def create_system(
    topology: openmm.app.Topology,
    potential: str | os.PathLike | Potential,
    precision: str | None = None,
    remove_cm_motion: bool = True,
) -> openmm.System:
    """A System of the topology's atoms (element masses) with the potential as its only force."""
    system = openmm.System()
    for atom in topology.atoms():
        if atom.element is None:
            raise ValueError(f"atom {atom.index} ({atom.name}) has no element")
        system.addParticle(atom.element.mass)
    add_ml_force(system, topology, potential, None, precision)
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    return system


def uses_periodic_box(system: openmm.System, topology: openmm.app.Topology) -> bool:
    """Whether the topology has box vectors or the system a periodic force (PME, periodic cutoff)."""
    return topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()


def check_periodic_support(potential: Potential) -> None:
    """Raise ValueError unless the potential handles periodic boxes (format v2's `periodic` flag)."""
    if not potential.periodic:
        raise ValueError(
            f"periodic box: this potential (format v{potential.metadata.get('format_version')}) handles isolated "
            "molecules only; remove the topology's box vectors and use a non-periodic system (e.g. NoCutoff), "
            "or re-export the potential with this mlff (format v2 handles periodic boxes)"
        )


def topology_atomic_numbers(atoms: Sequence[openmm.app.topology.Atom]) -> list[int]:
    """Atomic numbers of topology atoms; ValueError for an atom without an element."""
    missing = [atom.index for atom in atoms if atom.element is None]
    if missing:
        raise ValueError(f"atom(s) {missing} have no element: the potential needs atomic numbers")
    return [int(atom.element.atomic_number) for atom in atoms]


def topology_from_atoms(
    atoms: Atoms, species: Sequence[int] | None = None
) -> tuple[openmm.app.Topology, unit.Quantity]:
    """An OpenMM Topology (one chain, one residue) and positions (nm) from an ASE Atoms.

    Args:
        atoms: the molecule (positions in Angstrom); a fully periodic cell becomes
            the topology's box (a periodic System with create_system).
        species: if given, atomic numbers the potential knows; others are an error.

    Raises:
        ValueError: partly periodic atoms, or an element outside `species`.
    """
    if atoms.pbc.any() and not atoms.pbc.all():
        raise ValueError(f"partly periodic atoms (pbc = {atoms.pbc.tolist()}) have no OpenMM topology")
    numbers = [int(z) for z in atoms.get_atomic_numbers()]
    if species is not None:
        check_species(numbers, species)
    topology = openmm.app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, z in enumerate(numbers):
        element = openmm.app.Element.getByAtomicNumber(z)
        topology.addAtom(f"{element.symbol}{index + 1}", element, residue)
    if atoms.pbc.all():
        topology.setPeriodicBoxVectors(np.asarray(atoms.cell) * ANGSTROM_TO_NM * unit.nanometer)
    positions = np.asarray(atoms.get_positions()) * ANGSTROM_TO_NM * unit.nanometer
    return topology, positions


def read_structure(
    path: str | os.PathLike, species: Sequence[int] | None = None
) -> tuple[openmm.app.Topology, unit.Quantity]:
    """Topology and positions (nm) from a PDB (through OpenMM), SDF, XYZ or any file ASE reads.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an element outside `species` (when given) or without an element.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    if path.suffix.lower() in (".pdb", ".ent"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="WARNING: duplicate atom", category=UserWarning)
            pdb = openmm.app.PDBFile(str(path))
        records = _first_model_atom_records(path)
        if records != pdb.topology.getNumAtoms():
            raise ValueError(
                f"{path}: OpenMM read {pdb.topology.getNumAtoms()} of the {records} atoms of the first model "
                "(duplicate atom names in a residue?); give each atom of a residue its own name"
            )
        numbers = topology_atomic_numbers(list(pdb.topology.atoms()))
        if species is not None:
            check_species(numbers, species)
        return pdb.topology, pdb.getPositions(asNumpy=True)
    import ase.io

    return topology_from_atoms(ase.io.read(path), species)


def _first_model_atom_records(path: Path) -> int:
    """Number of ATOM/HETATM records in a PDB file's first model."""
    count = 0
    for line in path.read_text().splitlines():
        if line.startswith(("ATOM  ", "HETATM")):
            count += 1
        elif line.startswith(("ENDMDL", "END")) and count:
            break
    return count
