"""Dataset readers -> Frames (eV, Angstrom).

- MD17-layout npz (keys z, R, E, F; optional split_train, split_test, md17_index),
  as in the sGDML MD17 files and ../shared/data/md17: energies kcal/mol.
- Official rMD17 npz (nuclear_charges, coords, energies, forces): kcal/mol.
- A packed corpus (.h5, `mlff.data.packed`), read whole here; training reads it lazily.
- Anything ASE reads with energies and forces (extxyz, ...): eV as ASE stores them.
  Per-frame info keys of extxyz files (the contract of `mlff data generate`):
  `equilibrium` (bool: a local minimum, forces zero), `method` and `molecule`
  (str, kept in Frames.extra). An equilibrium frame may lack forces (taken as
  zero) and an energy (then it has no energy label: Frames.has_energy False).

Label-free frames (positions only: extxyz frames with neither energy nor forces, npz files
without energy or force keys) are read only with `require_labels=False`, which the trainer passes
for a run whose losses need no labels (e.g. EMPP pretraining): they get no energy label and
zero forces, which are not labels. Everywhere else such a frame is an error naming the file and
the structure.
"""

import zipfile
from pathlib import Path

import numpy as np

from mlff.data.frames import DatasetError, Frames
from mlff.units import KCAL_PER_MOL_TO_EV

ENERGY_UNITS: dict[str, float] = {"eV": 1.0, "kcal/mol": KCAL_PER_MOL_TO_EV}

_LAYOUTS: dict[str, tuple[str, str, str, str]] = {
    "md17": ("z", "R", "E", "F"),
    "rmd17": ("nuclear_charges", "coords", "energies", "forces"),
}
_SPLIT_KEYS = ("split_train", "split_test")
_PER_FRAME_KEYS = ("md17_index", "old_indices")
# extxyz info keys kept per frame in Frames.extra ("" where a frame lacks one).
_INFO_TEXT_KEYS = ("method", "molecule")
# Part of every "no labels" error: how a label-free file is meant to be trained.
_LABEL_FREE_HINT = (
    "a file without energies and forces trains only with losses that need no labels "
    "(train.loss_weights: {energy: 0, forces: 0, empp: 1})"
)


def read_frames(
    path: str | Path, energy_unit: str = "auto", equilibrium: bool = False, require_labels: bool = True
) -> Frames:
    """Read a dataset file into Frames.

    Args:
        path: an .npz file (MD17 or rMD17 layout) or any file ASE can read with energies and forces;
            a leading ~ is the home folder (the example configs name the `mlff data fetch` cache so).
        energy_unit: "auto" (npz: kcal/mol, ASE: eV), "kcal/mol" or "eV"; forces use the same unit per Angstrom.
        equilibrium: mark every frame as an equilibrium frame (a file of minima); otherwise only
            the frames whose extxyz info says `equilibrium=True` are.
        require_labels: refuse frames without energy and forces (True, the default), or read them
            with no energy label and zero forces (False: a run whose losses need no labels).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset not found: {path}")
    if energy_unit != "auto" and energy_unit not in ENERGY_UNITS:
        raise ValueError(f"unknown energy unit {energy_unit!r}; known: {sorted(ENERGY_UNITS)}")
    if path.suffix.lower() in (".h5", ".hdf5"):
        from mlff.data.packed import read_packed

        if energy_unit not in ("auto", "eV"):
            raise ValueError(f"{path}: a packed corpus stores eV; energy_unit {energy_unit!r} does not apply")
        frames = read_packed(path)
        if equilibrium:
            frames.equilibrium[:] = True
        return frames
    optional = not require_labels
    if path.suffix == ".npz":
        frames = _read_npz(path, "kcal/mol" if energy_unit == "auto" else energy_unit, optional)
        if equilibrium:
            frames.equilibrium[:] = True
        return frames
    return _read_ase(path, "eV" if energy_unit == "auto" else energy_unit, equilibrium, optional)


def _read_npz(path: Path, energy_unit: str, labels_optional: bool = False) -> Frames:
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DatasetError(f"{path} is not a readable npz archive (truncated or corrupt?): {error}") from None
    with archive:
        layout = next((name for name, names in _LAYOUTS.items() if names[0] in keys), None)
        if layout is None:
            raise DatasetError(
                f"{path}: unknown npz layout (keys {sorted(keys)}); expected MD17 keys z, R, E, F "
                "or rMD17 keys nuclear_charges, coords, energies, forces"
            )
        z_key, r_key, e_key, f_key = _LAYOUTS[layout]
        missing = [key for key in (z_key, r_key, e_key, f_key) if key not in keys]
        unlabelled = labels_optional and not {e_key, f_key} & keys
        if missing and not (unlabelled and set(missing) == {e_key, f_key}):
            hint = f" ({_LABEL_FREE_HINT})" if set(missing) == {e_key, f_key} else ""
            raise DatasetError(f"{path}: missing key(s) {missing} for the {layout} layout{hint}")
        try:
            numbers = np.asarray(archive[z_key], dtype=np.int64)
            coordinates = np.asarray(archive[r_key], dtype=np.float64)
            if unlabelled:
                frame_count = coordinates.shape[0] if coordinates.ndim else 0
                energies = np.zeros(frame_count)
                forces = np.zeros_like(coordinates)
            else:
                energies = np.asarray(archive[e_key], dtype=np.float64).reshape(-1)
                forces = np.asarray(archive[f_key], dtype=np.float64)
            splits = {key: np.asarray(archive[key], dtype=np.int64) for key in _SPLIT_KEYS if key in keys}
            extra = {key: np.asarray(archive[key]) for key in _PER_FRAME_KEYS if key in keys}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise DatasetError(f"{path}: an array could not be read (truncated or corrupt?): {error}") from None
    if coordinates.ndim != 3 or coordinates.shape[2] != 3:
        raise DatasetError(f"{path}: {r_key} has shape {coordinates.shape}, expected [frames, atoms, 3]")
    num_frames, num_atoms, _ = coordinates.shape
    if numbers.shape != (num_atoms,):
        raise DatasetError(f"{path}: {z_key} has shape {numbers.shape}, expected ({num_atoms},) to match {r_key}")
    if forces.shape != coordinates.shape:
        raise DatasetError(f"{path}: {f_key} has shape {forces.shape}, expected {coordinates.shape} like {r_key}")
    if energies.shape != (num_frames,):
        raise DatasetError(f"{path}: {e_key} holds {energies.size} values for {num_frames} frames")
    for key, value in extra.items():
        if value.shape[0] != num_frames:
            raise DatasetError(f"{path}: {key} holds {value.shape[0]} values for {num_frames} frames")
    scale = ENERGY_UNITS[energy_unit]
    return Frames(
        positions=coordinates.reshape(-1, 3),
        atomic_numbers=np.tile(numbers, num_frames),
        n_atoms=np.full(num_frames, num_atoms),
        energies=energies * scale,
        forces=forces.reshape(-1, 3) * scale,
        splits=splits,
        source=str(path),
        extra=extra,
        has_energy=np.full(num_frames, not unlabelled),
    )


def read_images(path: Path) -> list:
    """Every structure of a file that ASE reads (XYZ, extxyz, SDF, ...), as ase.Atoms.

    Raises:
        DatasetError: ASE cannot read the file, or it holds no structure.
    """
    import ase.io

    try:
        images = ase.io.read(path, index=":")
    except Exception as error:
        raise DatasetError(f"{path}: ASE could not read it: {error}") from None
    if not images:
        raise DatasetError(f"{path}: no structures")
    return images


def _read_ase(path: Path, energy_unit: str, all_equilibrium: bool = False, labels_optional: bool = False) -> Frames:
    images = read_images(path)
    scale = ENERGY_UNITS[energy_unit]
    flags = [all_equilibrium or _info_flag(path, index, atoms.info) for index, atoms in enumerate(images)]
    labels = [
        _ase_labels(path, index, atoms, flag, labels_optional) for index, (atoms, flag) in enumerate(zip(images, flags))
    ]
    extra = {
        key: np.array([str(atoms.info.get(key, "")) for atoms in images])
        for key in _INFO_TEXT_KEYS
        if any(key in atoms.info for atoms in images)
    }
    return Frames(
        positions=np.concatenate([atoms.get_positions() for atoms in images]),
        atomic_numbers=np.concatenate([atoms.get_atomic_numbers() for atoms in images]).astype(np.int64),
        n_atoms=np.array([len(atoms) for atoms in images]),
        energies=np.array([0.0 if energy is None else energy * scale for energy, _ in labels], dtype=np.float64),
        forces=np.concatenate([forces * scale for _, forces in labels]),
        source=str(path),
        extra=extra,
        equilibrium=np.array(flags, dtype=bool),
        has_energy=np.array([energy is not None for energy, _ in labels], dtype=bool),
        cell=np.array([atoms.cell.array for atoms in images], dtype=np.float64).reshape(len(images), 3, 3),
        pbc=np.array([atoms.pbc for atoms in images], dtype=bool).reshape(len(images), 3),
    )


def _info_flag(path: Path, index: int, info: dict) -> bool:
    """The `equilibrium` info key of a structure (absent: False)."""
    value = info.get("equilibrium", False)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "t", "false", "f"):
        return value.strip().lower() in ("true", "t")
    raise DatasetError(f"{path}: structure {index} has equilibrium={value!r}; expected a boolean")


def _ase_labels(
    path: Path, index: int, atoms, equilibrium: bool, labels_optional: bool = False
) -> tuple[float | None, np.ndarray]:
    """(energy or None, forces [n, 3]) as the file stores them.

    An off-equilibrium frame needs both, unless labels are optional. An equilibrium frame's
    forces are zero by definition when absent, and a missing energy leaves it without an energy
    label; so does a label-free frame's (its zero forces are no label).
    """
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get("energy", results.get("free_energy"))
    forces = results.get("forces")
    if equilibrium or labels_optional:
        zeros = np.zeros((len(atoms), 3))
        return (None if energy is None else float(energy)), (zeros if forces is None else np.asarray(forces, float))
    if atoms.calc is None:
        raise DatasetError(f"{path}: structure {index} has no energy or forces ({_LABEL_FREE_HINT})")
    try:
        return float(atoms.get_potential_energy()), np.asarray(atoms.get_forces(), dtype=np.float64)
    except Exception as error:
        raise DatasetError(f"{path}: structure {index} lacks energy or forces: {error}") from None
