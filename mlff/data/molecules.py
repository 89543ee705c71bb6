"""Molecules to label: ASE's G2 collection, structure files, SMILES (RDKit), dataset frames.

A `MoleculeSpec` is plain, picklable data: a name, a source id and either starting
geometries (Angstrom) or a SMILES string that RDKit embeds into conformers in the worker
(so a bad SMILES fails that one molecule, not the whole batch). Names and source ids are
made safe for extxyz comment lines (see `extxyz_safe`).
"""

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.io.extxyz import key_val_dict_to_str, key_val_str_to_dict

from mlff.data.optional import import_optional

# Elements of the G2 subset used for pre-training (H, C, N, O: those of MD17).
G2_ELEMENTS: frozenset[int] = frozenset({1, 6, 7, 8})


@dataclass
class MoleculeSpec:
    """One molecule to label.

    Attributes:
        name: molecule name written as the frames' `molecule` key (extxyz-safe).
        source: origin id written as `source`: "g2:NAME", "xyz:PATH#K", "smiles:SMILES", "dataset:PATH#FRAME".
        numbers: [n] atomic numbers, or None for a SMILES molecule (embedded later).
        geometries: starting geometries, each [n, 3] Angstrom (empty for a SMILES molecule).
        smiles: the SMILES string, or None.
        charge: total charge (e); only neutral closed-shell molecules are labelled.
        info: extra per-frame info keys copied to every frame (e.g. {"dataset_frame": 5}).
        cell: [3, 3] Angstrom cell vectors (rows) of a periodic structure, or None.
        pbc: periodic axes (x, y, z); all False for a molecule.
    """

    name: str
    source: str
    numbers: np.ndarray | None = None
    geometries: list[np.ndarray] = field(default_factory=list)
    smiles: str | None = None
    charge: int = 0
    info: dict[str, int | float | str] = field(default_factory=dict)
    cell: np.ndarray | None = None
    pbc: tuple[bool, bool, bool] = (False, False, False)

    @property
    def periodic(self) -> bool:
        """Whether the structure has a periodic axis (a box of a liquid or crystal, not a molecule)."""
        return any(self.pbc)

    @property
    def key(self) -> str:
        """A file-name-safe key unique to the source (names may repeat, sources may not)."""
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)[:40]
        return f"{slug}-{zlib.crc32(self.source.encode()):08x}"

    def seed(self, base_seed: int) -> int:
        """A per-molecule random seed, the same whatever the batch order or worker."""
        return (base_seed * 1_000_003 + zlib.crc32(self.source.encode())) % 2**32


def extxyz_safe(text: str, prefix: str = "mol_") -> str:
    """`text` as a value that ase.io's extxyz writer and reader give back as the same string.

    The extxyz reader drops backslashes (SMILES stereo bonds) and turns values such as "1",
    "T" or "F" (the SMILES of HF) into numbers or booleans: backslashes become "%5C" and a
    value that would not read back as a string gets `prefix`.
    """
    if any(c in text for c in "\n\r\t"):
        raise ValueError(f"name or id {text!r} contains a line break or tab")
    escaped = text.replace("\\", "%5C")
    for candidate in (escaped, prefix + escaped):
        if key_val_str_to_dict(key_val_dict_to_str({"k": candidate})).get("k") == candidate:
            return candidate
    raise ValueError(f"name or id {text!r} cannot be stored in an extxyz comment line")


def is_closed_shell(numbers: np.ndarray, charge: int = 0, magmoms: np.ndarray | None = None) -> bool:
    """Even electron count and no initial magnetic moments."""
    electrons = int(np.sum(numbers)) - charge
    return electrons % 2 == 0 and (magmoms is None or not np.any(magmoms))


def g2_molecules(elements: frozenset[int] = G2_ELEMENTS) -> list[MoleculeSpec]:
    """Neutral closed-shell molecules of ASE's G2 collection made only of `elements` (61 for H, C, N, O).

    Closed shell: even electron count and all of the collection's magnetic moments zero
    (this drops radicals and triplets such as O2 and CH2_s3B1d, keeps singlet CH2_s1A1d).
    """
    from ase.collections import g2

    specs = []
    for name, atoms in zip(g2.names, g2):
        numbers = atoms.get_atomic_numbers()
        charge = int(round(float(atoms.get_initial_charges().sum())))
        if not set(int(z) for z in numbers) <= elements or charge != 0:
            continue
        if not is_closed_shell(numbers, charge, atoms.get_initial_magnetic_moments()):
            continue
        specs.append(
            MoleculeSpec(
                name=extxyz_safe(name),
                source=extxyz_safe(f"g2:{name}"),
                numbers=numbers.astype(np.int64),
                geometries=[atoms.get_positions()],
            )
        )
    return specs


def structure_file_molecules(paths: Iterable[str | Path]) -> list[MoleculeSpec]:
    """Every structure in XYZ/extxyz/SDF (anything ase.io reads) files, each one molecule.

    Named by the file stem (stem_K when a file holds several); its geometry is the start of
    one conformer.
    """
    from mlff.data.readers import read_images

    specs = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"structure file not found: {path}")
        images = read_images(path)
        for k, atoms in enumerate(images):
            name = path.stem if len(images) == 1 else f"{path.stem}_{k}"
            charge = int(round(float(atoms.get_initial_charges().sum())))
            specs.append(
                MoleculeSpec(
                    name=extxyz_safe(name),
                    source=extxyz_safe(f"xyz:{path}#{k}"),
                    numbers=atoms.get_atomic_numbers().astype(np.int64),
                    geometries=[atoms.get_positions()],
                    charge=charge,
                    cell=np.array(atoms.cell.array) if atoms.pbc.any() else None,
                    pbc=tuple(bool(axis) for axis in atoms.pbc),
                )
            )
    return specs


def smiles_molecules(smiles: Sequence[str], names: Sequence[str | None] | None = None) -> list[MoleculeSpec]:
    """Molecules from SMILES strings, named by `names` where given, else by the SMILES itself."""
    names = list(names) if names is not None else [None] * len(smiles)
    if len(names) != len(smiles):
        raise ValueError(f"{len(names)} names for {len(smiles)} SMILES")
    return [
        MoleculeSpec(name=extxyz_safe(name or text), source=extxyz_safe(f"smiles:{text}"), smiles=text)
        for text, name in zip(smiles, names)
    ]


def read_smiles_file(path: str | Path) -> tuple[list[str], list[str | None]]:
    """SMILES and optional names from a text file: one `SMILES [name]` per line; '#' at the start of a line or
    after whitespace starts a comment (inside a SMILES it is a triple bond)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMILES file not found: {path}")
    smiles: list[str] = []
    names: list[str | None] = []
    for line in path.read_text().splitlines():
        # '#' is also SMILES' triple bond: a comment starts a line or follows whitespace.
        fields = [] if line.lstrip().startswith("#") else re.split(r"\s#", line, maxsplit=1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ValueError(f"{path}: line {line!r} has {len(fields)} fields; expected 'SMILES [name]'")
        smiles.append(fields[0])
        names.append(fields[1] if len(fields) == 2 else None)
    if not smiles:
        raise ValueError(f"{path}: no SMILES")
    return smiles, names


def embed_smiles(smiles: str, conformers: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Atomic numbers [n] (hydrogens added) and `conformers` ETKDG geometries [n, 3] Angstrom.

    Not pruned here: RDKit's RMSD pruning ignores hydrogens and would merge OH/NH rotamers;
    the generator drops conformers that optimise to the same minimum instead.
    ValueError for an unparsable, charged or radical SMILES or one RDKit cannot embed.
    """
    chem = import_optional("rdkit.Chem", "building molecules from SMILES")
    all_chem = import_optional("rdkit.Chem.AllChem", "building molecules from SMILES")
    rdlogger = import_optional("rdkit.RDLogger", "building molecules from SMILES")
    # RDKit prints parse errors to stderr; the ValueError below carries the message instead.
    rdlogger.DisableLog("rdApp.*")
    try:
        mol = chem.MolFromSmiles(smiles)
    finally:
        rdlogger.EnableLog("rdApp.*")
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    if chem.GetFormalCharge(mol) != 0:
        raise ValueError(f"SMILES {smiles!r} has net charge {chem.GetFormalCharge(mol)}: only neutral molecules")
    if any(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms()):
        raise ValueError(f"SMILES {smiles!r} is a radical: only closed-shell molecules")
    mol = chem.AddHs(mol)
    params = all_chem.ETKDGv3()
    params.randomSeed = seed % 2**31
    conformer_ids = list(all_chem.EmbedMultipleConfs(mol, numConfs=conformers, params=params))
    if not conformer_ids:
        raise ValueError(f"RDKit could not embed SMILES {smiles!r} in 3D")
    numbers = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
    geometries = [np.asarray(mol.GetConformer(cid).GetPositions(), dtype=np.float64) for cid in conformer_ids]
    return numbers, geometries


def resolve_dataset(target: str | Path, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """The dataset file and molecule name of `target`: a dataset path, or an MD17 molecule name looked up as
    rMD17 in the fetch cache (`mlff data fetch rmd17 NAME` puts it there)."""
    from mlff.data.fetch import MOLECULES, default_cache_dir

    path = Path(target)
    if path.is_file():
        name = path.stem
        for prefix in ("rmd17_", "md17_"):
            name = name.removeprefix(prefix)
        return path, name
    if str(target) in MOLECULES:
        cached = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        candidate = cached / f"rmd17_{target}.npz"
        if candidate.is_file():
            return candidate, str(target)
        raise FileNotFoundError(
            f"rMD17 {target} is not in the cache {cached}; run `mlff data fetch rmd17 {target}` "
            "or give the dataset file's path"
        )
    raise FileNotFoundError(f"{target!r} is neither a dataset file nor an MD17 molecule name ({', '.join(MOLECULES)})")


def dataset_molecules(path: str | Path, frames: Sequence[int], name: str) -> list[MoleculeSpec]:
    """One molecule per dataset frame (any file `mlff.data.read_frames` reads), atom order as in the file."""
    from mlff.data.readers import read_frames

    path = Path(path)
    data = read_frames(path)
    specs = []
    for index in frames:
        if not 0 <= index < data.num_frames:
            raise ValueError(f"frame {index} is outside 0..{data.num_frames - 1} of {path}")
        numbers, positions, _, _ = data.frame(index)
        specs.append(
            MoleculeSpec(
                name=extxyz_safe(name),
                source=extxyz_safe(f"dataset:{path}#{index}"),
                numbers=np.asarray(numbers, dtype=np.int64).copy(),
                geometries=[np.asarray(positions, dtype=np.float64).copy()],
                info={"dataset_frame": int(index)},
            )
        )
    return specs
