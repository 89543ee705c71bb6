"""Read a potential file: metadata, validation and a thin runtime wrapper.

A potential file is a TorchScript archive whose forward is

    forward(positions [N, 3] Angstrom, atomic_numbers [N] long, batch [N] long,
            cell [B, 3, 3] Angstrom, pbc [B, 3] bool)
        -> (energy [B] float64 eV, forces [N, 3] eV/Angstrom)

with a JSON extra file `mlff_metadata.json` (format, format_version, species,
cutoff, dtype, units, model, and whatever the exporter added). Format v1 handles isolated
molecules only; v2 adds periodic structures and the capability flags `periodic` and `stress`
(the method `energy_forces_stress`, stress [B, 3, 3] eV/A^3). Both versions load. This module
needs only torch, numpy, ASE's element table and the file: it imports no
model class and nothing from training, so any runtime can use it.
"""

import contextlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff._version import __version__
from mlff.resources import potential_path

# dtype_from_name and dtype_name are this module's public names for the one dtype map in mlff.utils.
from mlff.utils import dtype_map, format_table, species_symbols
from mlff.utils import dtype_name as dtype_name
from mlff.utils import torch_dtype as dtype_from_name


@contextlib.contextmanager
def torchscript_without_deprecation_warning() -> Iterator[None]:
    """Silence torch's deprecation warning for torch.jit: TorchScript is mlff's file format by choice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


POTENTIAL_FORMAT = "mlff-potential"
POTENTIAL_FORMAT_VERSION = 2
# Versions this mlff reads: v1 (isolated molecules) and v2 (periodic, stress).
READABLE_FORMAT_VERSIONS = (1, 2)
METADATA_FILE = "mlff_metadata.json"
UNITS: dict[str, str] = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}
DTYPES: dict[str, torch.dtype] = dtype_map()

_TORCHSCRIPT_MARKER = "constants.pkl"
_SCRIPT_ERROR_PREFIX = "builtins.ValueError: "


def molecule_batch(
    structures: Sequence[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The five forward arguments of a batch of isolated molecules [(atomic numbers [n], positions [n, 3] A)]."""
    counts = torch.as_tensor([len(numbers) for numbers, _ in structures], device=device)
    return (
        torch.as_tensor(np.concatenate([positions for _, positions in structures]), dtype=dtype, device=device),
        torch.as_tensor(np.concatenate([numbers for numbers, _ in structures]), dtype=torch.long, device=device),
        torch.arange(len(structures), device=device).repeat_interleave(counts),
        torch.zeros(len(structures), 3, 3, dtype=dtype, device=device),
        torch.zeros(len(structures), 3, dtype=torch.bool, device=device),
    )


class PotentialError(ValueError):
    """A potential file is missing, corrupt, not an mlff potential, or of an unknown version."""


class PotentialNotFoundError(PotentialError, FileNotFoundError):
    """Neither an existing file nor a shipped potential's name (a PotentialError and a FileNotFoundError)."""


def resolve_potential(name_or_path: str | os.PathLike) -> Path:
    """The file of a potential given by path or by a shipped potential's name ("ethanol",
    `mlff.resources.shipped_potentials()`); an existing path wins over a name of the same spelling.

    Raises:
        PotentialNotFoundError: neither an existing file nor a shipped name; the message lists the names.
    """
    try:
        return potential_path(name_or_path)
    except FileNotFoundError as error:
        raise PotentialNotFoundError(str(error)) from None


def is_potential_file(path: str | os.PathLike) -> bool:
    """True if `path` is a TorchScript archive or an AOTInductor package, the containers of a potential file.

    Tells a potential file from a training checkpoint (a torch.save archive, which has no
    TorchScript constants) by content, not by name. False for a missing or non-zip file;
    whether it is a valid mlff potential is read_metadata's to say.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            return any(name.endswith(f"/{_TORCHSCRIPT_MARKER}") for name in names) or _is_aoti(names)
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _is_aoti(names: list[str]) -> bool:
    """Whether zip entries are an AOTInductor package's (`mlff.export.aoti`; imported lazily: it is optional)."""
    return any("/data/aotinductor/" in name for name in names)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a potential file (a path or a shipped potential's name), checked for format and version.

    Reads only the archive's `mlff_metadata.json`: the model is not loaded.

    Raises:
        PotentialError: the file is missing (PotentialNotFoundError), unreadable, not an mlff
            potential, or written in a format version this mlff does not read.
    """
    path = resolve_potential(path)
    metadata = _read_archive_metadata(path)
    _check_format(path, metadata)
    return metadata


def _read_archive_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata extra file of a TorchScript archive (unchecked)."""
    if not path.is_file():
        raise PotentialError(f"potential file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            metadata_names = [name for name in names if name.endswith(f"/extra/{METADATA_FILE}")]
            if _is_aoti(names):
                if not metadata_names:
                    raise PotentialError(
                        f"{path} is an AOTInductor package without {METADATA_FILE}: not written by `mlff export`"
                    )
            elif not any(name.endswith(f"/{_TORCHSCRIPT_MARKER}") for name in names):
                raise PotentialError(
                    f"{path} is not a TorchScript file (a torch.save file such as a training "
                    "checkpoint? turn a checkpoint into a potential with `mlff export`)"
                )
            if not metadata_names:
                raise PotentialError(f"{path} is not an mlff potential: a TorchScript file without {METADATA_FILE}")
            text = archive.read(metadata_names[0])
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise PotentialError(f"{path} is not a readable potential file (truncated or corrupt?): {error}") from None
    try:
        metadata = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PotentialError(f"{path}: {METADATA_FILE} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise PotentialError(f"{path}: {METADATA_FILE} holds a {type(metadata).__name__}, expected a JSON object")
    return metadata


def _check_format(path: Path, metadata: dict[str, Any]) -> None:
    """Raise PotentialError unless the metadata names a readable format version with species, cutoff and dtype."""
    found_format = metadata.get("format")
    if found_format != POTENTIAL_FORMAT:
        raise PotentialError(
            f"{path} is not an mlff potential (metadata format {found_format!r}, expected {POTENTIAL_FORMAT!r})"
        )
    version = metadata.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise PotentialError(
            f"{path} has potential format version {version!r} (written by mlff "
            f"{metadata.get('mlff_version', '?')}); this mlff {__version__} reads format versions "
            f"{', '.join(str(known) for known in READABLE_FORMAT_VERSIONS)}"
        )
    missing = [key for key in ("species", "cutoff", "dtype") if key not in metadata]
    if missing:
        raise PotentialError(f"{path}: metadata lacks {missing}")
    if metadata["dtype"] not in DTYPES:
        raise PotentialError(f"{path}: metadata dtype {metadata['dtype']!r} is not one of {sorted(DTYPES)}")


class Potential:
    """A loaded potential file: the TorchScript module and its metadata.

    Attributes:
        module: the TorchScript module (forward as in this module's docstring), or an
            `mlff.export.aoti.AOTIModule` for an AOTInductor package (isolated molecules only).
        path: the file it was loaded from (None when built in memory).
        metadata: the file's metadata dict.
        species: atomic numbers the potential knows.
        cutoff: interaction cutoff, Angstrom.
        device: where the module's weights live.
        dtype: the network's floating dtype (energies are always float64).
        periodic: whether the file handles periodic structures (format v2's `periodic` flag).
        has_stress: whether it gives the stress (format v2's `stress` flag: `energy_forces_stress`).
    """

    def __init__(self, module: Any, metadata: dict[str, Any], device: torch.device, path: Path | None = None) -> None:
        self.module = module
        self.path = path
        self.metadata = metadata
        self.species: list[int] = [int(z) for z in metadata["species"]]
        self.cutoff = float(metadata["cutoff"])
        self.device = device
        self.dtype = DTYPES[metadata["dtype"]]
        self.periodic = bool(metadata.get("periodic", False))
        self.has_stress = bool(metadata.get("stress", False))

    def __repr__(self) -> str:
        symbols = species_symbols(self.species)
        return (
            f"Potential(species={symbols}, cutoff={self.cutoff} A, "
            f"dtype={dtype_name(self.dtype)}, device={self.device})"
        )

    def __call__(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        check: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies and forces of a batch of structures.

        Args:
            positions: [N, 3] Angstrom. atomic_numbers: [N] long. batch: [N] long,
                structure index of each atom (non-decreasing). cell: [B, 3, 3] Angstrom, rows
                the cell vectors.
            pbc: [B, 3] bool; all False for a format v1 file (isolated molecules only).
            check: False skips the input checks (each reads tensor values: a GPU synchronisation)
                where `check_inputs` has passed for this batch already (MD engines, per step).

        Returns:
            energy [B] float64 eV and forces [N, 3] eV/Angstrom in the potential's
            dtype, both detached.

        Raises:
            ValueError: the module rejected the input (the message says why).
        """
        # Forces are a gradient: a caller's torch.no_grad() would make a file written before
        # 2026-11-30 return zeros (newer ones refuse), so gradients are on for the call.
        with torch.enable_grad():
            try:
                if check or not self._has_method("energy_forces_unchecked"):
                    energy, forces = self.module(positions, atomic_numbers, batch, cell, pbc)
                else:
                    energy, forces = self.module.energy_forces_unchecked(positions, atomic_numbers, batch, cell, pbc)
            except torch.jit.Error as error:
                raise _input_error(error) from None
        return energy.detach(), forces.detach()

    def check_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> None:
        """Raise ValueError unless the five arguments fit the file's contract (once per batch set-up).

        Files written before the checks were a method of their own check by a call instead.
        """
        with torch.enable_grad():
            try:
                if self._has_method("check_inputs"):
                    self.module.check_inputs(positions, atomic_numbers, batch, cell, pbc)
                else:
                    self.module(positions, atomic_numbers, batch, cell, pbc)
            except torch.jit.Error as error:
                raise _input_error(error) from None

    def _has_method(self, name: str) -> bool:
        """Whether the module has method `name` (a TorchScript module's exported methods, or a Python one)."""
        if isinstance(self.module, torch.jit.ScriptModule):
            return bool(self.module._c._has_method(name))
        return callable(getattr(self.module, name, None))

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> "Potential":
        """Move and/or convert the module in place (like nn.Module.to); returns self.

        Converting the dtype changes the network's floating weights only; the
        per-element reference energies are an integer buffer and keep full precision.
        """
        if device is not None:
            self.device = torch.device(device)
            self.module.to(self.device)
        if dtype is not None:
            self.dtype = dtype_from_name(dtype)
            self.module.to(self.dtype)
        return self

    def energy_forces_stress(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energy [B] float64 eV, forces [N, 3] eV/A and stress [B, 3, 3] eV/A^3 (ASE's sign:
        (1/V) dE/d(strain)) of periodic structures, detached; arguments as `__call__`.

        Raises:
            ValueError: the file has no stress (a v1 or committee file), or the module rejected the input.
        """
        if not self.has_stress and self.metadata.get("container") == "aoti":
            raise ValueError("an AOTInductor package gives no stress (molecules only): use the TorchScript file")
        if not self.has_stress:
            raise ValueError(
                f"this potential (format v{self.metadata.get('format_version')}) gives no stress; "
                "re-export it with this mlff (format v2) for the stress"
            )
        with torch.enable_grad():
            try:
                energy, forces, stress = self.module.energy_forces_stress(positions, atomic_numbers, batch, cell, pbc)
            except torch.jit.Error as error:
                raise _input_error(error) from None
        return energy.detach(), forces.detach(), stress.detach()

    def energy_and_forces(
        self,
        atomic_numbers: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """Energy and forces of one structure.

        Args:
            atomic_numbers: [n] integers.
            positions: [n, 3] Angstrom.
            cell: [3, 3] Angstrom, rows the cell vectors (None: no cell).
            pbc: [3] bools (None: isolated).

        Returns:
            (energy in eV, forces [n, 3] float64 in eV/Angstrom).
        """
        energy, forces = self(*self._structure_tensors(atomic_numbers, positions, cell, pbc))
        return float(energy[0]), forces.cpu().numpy().astype(np.float64)

    def energy_forces_stress_of(
        self, atomic_numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Energy (eV), forces [n, 3] (eV/A) and stress [3, 3] (eV/A^3), float64, of one periodic structure."""
        energy, forces, stress = self.energy_forces_stress(
            *self._structure_tensors(atomic_numbers, positions, cell, pbc)
        )
        return float(energy[0]), forces.cpu().numpy().astype(np.float64), stress[0].cpu().numpy().astype(np.float64)

    def _structure_tensors(
        self,
        atomic_numbers: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray | None,
        pbc: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The five forward arguments of one structure (B = 1), checked for shapes."""
        numbers = np.asarray(atomic_numbers)
        coordinates = np.asarray(positions, dtype=np.float64)
        if numbers.ndim != 1 or coordinates.shape != (numbers.size, 3):
            raise ValueError(
                f"expected atomic_numbers [n] and positions [n, 3], got shapes {numbers.shape} and {coordinates.shape}"
            )
        box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        periodic = np.zeros(3, dtype=bool) if pbc is None else np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        if box.shape != (3, 3):
            raise ValueError(f"expected a cell [3, 3], got shape {box.shape}")
        return (
            torch.as_tensor(coordinates, dtype=self.dtype, device=self.device),
            torch.as_tensor(numbers, dtype=torch.long, device=self.device),
            torch.zeros(numbers.size, dtype=torch.long, device=self.device),
            torch.as_tensor(box, dtype=self.dtype, device=self.device)[None],
            torch.as_tensor(np.array(periodic), device=self.device)[None],
        )

    @property
    def is_committee(self) -> bool:
        """Whether the file is a committee (`mlff.export.committee`): it has `energy_forces_spread`."""
        return bool(self.metadata.get("committee"))

    def energy_forces_spread(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A committee's mean energy [B] eV, mean forces [N, 3] eV/A and force spread [N] eV/A (the
        norm over x, y, z of the standard deviation over members), detached; arguments as `__call__`."""
        if not self.is_committee:
            raise ValueError("this potential is not a committee: it has no force spread")
        with torch.enable_grad():
            try:
                energy, forces, spread = self.module.energy_forces_spread(positions, atomic_numbers, batch, cell, pbc)
            except torch.jit.Error as error:
                raise _input_error(error) from None
        return energy.detach(), forces.detach(), spread.detach()

    def energy_forces_spread_of(
        self,
        atomic_numbers: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """A committee's energy (eV), forces [n, 3] and force spread [n] (float64, eV/A) of one structure
        (cell [3, 3] A and pbc [3] as `energy_and_forces`)."""
        energy, forces, spread = self.energy_forces_spread(
            *self._structure_tensors(atomic_numbers, positions, cell, pbc)
        )
        as_numpy = lambda tensor: tensor.cpu().numpy().astype(np.float64)  # noqa: E731
        return float(energy[0]), as_numpy(forces), as_numpy(spread)


def _input_error(error: torch.jit.Error) -> Exception:
    """The ValueError a TorchScript module raised, without the interpreter traceback."""
    lines = str(error).strip().splitlines()
    if lines and lines[-1].startswith(_SCRIPT_ERROR_PREFIX):
        return ValueError(lines[-1][len(_SCRIPT_ERROR_PREFIX) :])
    return error


def load_potential(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> Potential:
    """Load a potential file for inference.

    Args:
        path: a .pt file written by `mlff export` / `export_model`, or a shipped potential's name
            ("ethanol"); an existing path wins over a name.
        device: where to put the module ("cpu", "cuda", ...).
        dtype: "float32" or "float64" to convert the network; None keeps the file's.

    Raises:
        PotentialError: the file is missing (PotentialNotFoundError, also a FileNotFoundError),
            truncated or corrupt, not an mlff potential, or of a format version this mlff does not read.
    """
    path = resolve_potential(path)
    metadata = read_metadata(path)
    target = torch.device(device)
    if metadata.get("container") == "aoti":
        from mlff.export.aoti import AOTIModule

        if dtype is not None and dtype_from_name(dtype) != DTYPES[metadata["dtype"]]:
            raise PotentialError(
                f"{path} is an AOTInductor package compiled for {metadata['dtype']}; it cannot run in "
                f"{dtype_name(dtype_from_name(dtype))}: export it again with --dtype"
            )
        return Potential(AOTIModule(path, metadata, target), metadata, target, path)
    try:
        with torchscript_without_deprecation_warning():
            module = torch.jit.load(str(path), map_location=target)
    except RuntimeError as error:
        raise PotentialError(f"{path} is not a readable potential file (truncated or corrupt?): {error}") from None
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    potential = Potential(module, metadata, target, path)
    if dtype is not None:
        potential.to(dtype=dtype)
    return potential


def describe_metadata(metadata: dict[str, Any]) -> str:
    """The metadata as aligned, readable lines (nested keys dotted, long lists shortened)."""
    species = [int(z) for z in metadata.get("species", [])]
    symbols = species_symbols(species)
    units = metadata.get("units", {})
    model = metadata.get("model", {})
    architecture = f"{model.get('backbone')} backbone, {model.get('encoding')} encoding"
    rows = [
        ("format", f"{metadata.get('format')} v{metadata.get('format_version')} (mlff {metadata.get('mlff_version')})"),
        ("periodic", f"{bool(metadata.get('periodic', False))}, stress {bool(metadata.get('stress', False))}"),
        ("species", f"{symbols} (Z = {', '.join(str(z) for z in species)})"),
        ("cutoff", f"{metadata.get('cutoff')} Angstrom"),
        ("dtype", str(metadata.get("dtype"))),
        ("units", ", ".join(f"{key} {value}" for key, value in units.items())),
        ("model", f"{architecture}, {model.get('parameters')} parameters"),
    ]
    shown = {"format", "format_version", "mlff_version", "species", "cutoff", "dtype", "units", "periodic", "stress"}
    rest = {key: value for key, value in metadata.items() if key not in shown}
    rest["model"] = {key: value for key, value in model.items() if key not in ("backbone", "encoding", "parameters")}
    rows.extend(_flatten(rest))
    return format_table(rows, headers=(), fmt="plain", numparse=False)


def _flatten(value: Any, prefix: str = "", max_items: int = 8) -> list[tuple[str, str]]:
    """(dotted key, text) rows of a nested JSON value; lists longer than max_items are summarised."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows.extend(_flatten(item, f"{prefix}.{key}" if prefix else str(key), max_items))
        return rows
    if isinstance(value, list) and (len(value) > max_items or any(isinstance(item, (list, dict)) for item in value)):
        return [(prefix, f"[{len(value)} items]")]
    if isinstance(value, float):
        return [(prefix, repr(float(f"{value:.6g}")))]
    return [(prefix, json.dumps(value) if isinstance(value, list) else str(value))]
