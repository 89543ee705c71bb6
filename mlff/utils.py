"""The one utility layer: atomic writes, JSON encoding, tables, dtype names, element names.

Each helper exists once in mlff; everything else imports it from here. Nothing here imports
torch at module level, so the openmm-ml entry point and light CLI paths stay cheap.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

# When the process umask cannot be read, assume the common default: files rw-r--r--.
_DEFAULT_UMASK = 0o022


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", mode: int | None = None) -> Iterator[Path]:
    """A temporary path in `path`'s folder that becomes `path` when the block ends without error.

    For writers that need a file name (np.savez, ase.io.write) or a check of the finished file
    before it replaces the old one. On leaving the block the file is fsynced, given `mode`
    (default: what a plain open() would give, 0o666 less the umask; mkstemp alone gives 0o600)
    and renamed over `path`. On any error the temporary file is removed and the old file kept.
    `suffix` ends the temporary name (e.g. ".npz" for readers that go by extension).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        os.chmod(temporary, _new_file_mode() if mode is None else mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], mode: int | None = None) -> Path:
    """Write a file so that a reader sees the old file or the whole new one, never a part.

    `write(stream)` fills a temporary file in the same folder (a binary stream); it is then
    fsynced and renamed over `path` (see atomic_path, which also says what `mode` does).
    On any error the temporary file is removed and the old file kept. Returns `path` as a Path.
    """
    with atomic_path(path, mode=mode) as temporary, open(temporary, "wb") as stream:
        write(stream)
    return Path(path)


def _fsync(path: Path) -> None:
    """Flush a closed file's data to disk, so that the rename never publishes an empty file after a crash."""
    # Opened for writing: fsync of a read-only descriptor fails on Windows.
    handle = os.open(path, os.O_RDWR)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _new_file_mode() -> int:
    """0o666 less the process umask, read without setting it (os.umask would change global state)."""
    umask = _DEFAULT_UMASK
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through atomic_write: a crash mid-write keeps the old file."""
    import torch

    return atomic_write(path, lambda stream: torch.save(obj, stream))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """atomic_write of a bytes object."""
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """atomic_write of a str, UTF-8 encoded."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class JSONEncoder(json.JSONEncoder):
    """json.JSONEncoder that also writes numpy scalars and arrays, torch tensors, Paths and sets (sorted)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        tolist = getattr(o, "tolist", None)  # numpy arrays and scalars, torch tensors
        if callable(tolist):
            return tolist()
        return super().default(o)


def to_json(data: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """`data` as JSON text, numpy and torch values included (see JSONEncoder)."""
    return json.dumps(data, cls=JSONEncoder, indent=indent, sort_keys=sort_keys)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write `data` as JSON to `path` atomically, with a trailing newline."""
    return atomic_write_text(path, to_json(data, indent, sort_keys) + "\n")


def finite_or_none(value: Any) -> Any:
    """`value` (nested dicts, lists, tuples) with NaN and infinite floats replaced by None.

    JSON has no NaN: strict readers reject the `NaN` that json.dumps writes by default.
    """
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(
    rows: Iterable[Sequence[Any]],
    headers: Sequence[str],
    fmt: str = "github",
    floatfmt: str | Sequence[str] = "g",
    numparse: bool = True,
    missingval: str = "",
) -> str:
    """Rows as a text table through `tabulate`.

    fmt: "github" (Markdown, for reports and READMEs) or "plain" (aligned columns for terminals).
    floatfmt: format of float cells, one for all columns or one per column (e.g. ".1f").
    numparse: False keeps text cells that look like numbers (e.g. "1.50", "0.1-5.0") as written.
    missingval: the text of None cells (e.g. "-"); a number column with None cells keeps its floatfmt.
    """
    from tabulate import tabulate

    return tabulate(
        [list(row) for row in rows],
        headers=list(headers),
        tablefmt=fmt,
        floatfmt=floatfmt,
        disable_numparse=not numparse,
        missingval=missingval,
    )


DTYPE_NAMES: tuple[str, ...] = ("float32", "float64")


def dtype_map() -> dict[str, Any]:
    """{"float32": torch.float32, "float64": torch.float64}: the dtypes mlff computes in, by name."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype: Any) -> Any:
    """torch.float32 or torch.float64 from a name in DTYPE_NAMES or from the torch dtype itself.

    Raises:
        ValueError: any other name or dtype.
    """
    dtypes = dtype_map()
    if dtype in dtypes.values() and not isinstance(dtype, str):
        return dtype
    if isinstance(dtype, str) and dtype in dtypes:
        return dtypes[dtype]
    raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)}, got {dtype!r}")


def dtype_name(dtype: Any) -> str:
    """The name in DTYPE_NAMES of torch.float32 or torch.float64 (or of the name itself)."""
    wanted = torch_dtype(dtype)
    return next(name for name, value in dtype_map().items() if value == wanted)


def element_symbol(z: int) -> str:
    """The chemical symbol of atomic number z (ASE's table); a clear error for an unknown number."""
    from ase.data import chemical_symbols

    if not 1 <= int(z) < len(chemical_symbols):
        raise ValueError(f"unknown atomic number {z}")
    return chemical_symbols[int(z)]


def atomic_number(symbol: str) -> int:
    """The atomic number of a chemical symbol (ASE's table); a clear error for an unknown element."""
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers or symbol == "X":
        raise ValueError(f"unknown element {symbol!r}")
    return int(atomic_numbers[symbol])


def species_symbols(species: Iterable[int]) -> str:
    """The symbols of atomic numbers, space-separated: [1, 6, 8] -> "H C O"."""
    return " ".join(element_symbol(z) for z in species)


def element_label(z: int) -> str:
    """Symbol and atomic number for messages, e.g. "F (Z=9)"; just "Z=200" for a number with no element."""
    try:
        return f"{element_symbol(z)} (Z={int(z)})"
    except ValueError:
        return f"Z={int(z)}"


def check_species(atomic_numbers: Iterable[int], species: Iterable[int]) -> None:
    """Raise ValueError naming each element of `atomic_numbers` that is not among a potential's `species`,
    e.g. "element(s) F (Z=9) not in the potential's species (H C O)"."""
    species = [int(z) for z in species]
    unknown = sorted({int(z) for z in atomic_numbers} - set(species))
    if unknown:
        names = ", ".join(element_label(z) for z in unknown)
        raise ValueError(f"element(s) {names} not in the potential's species ({species_symbols(species)})")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks): how datasets and potentials are identified."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
