"""The one utility layer: atomic writes, JSON encoding, tables, dtype names, element names.

Each helper exists once in mlff; everything else imports it from here. Nothing here imports
torch at module level, so the openmm-ml entry point and light CLI paths stay cheap.
"""

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file so that a reader sees the old file or the whole new one, never a part.

    `write(stream)` fills a temporary file in the same folder (a binary stream); it is flushed,
    fsynced and renamed over `path`. On any error the temporary file is removed and the old file kept.
    Returns `path` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """atomic_write of a bytes object."""
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """atomic_write of a str, UTF-8 encoded."""
    return atomic_write_bytes(path, text.encode("utf-8"))


class JSONEncoder(json.JSONEncoder):
    """json.JSONEncoder that also writes numpy scalars and arrays, torch tensors and Paths."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Path):
            return str(o)
        tolist = getattr(o, "tolist", None)  # numpy arrays and scalars, torch tensors
        if callable(tolist):
            return tolist()
        item = getattr(o, "item", None)
        if callable(item):
            return item()
        return super().default(o)


def to_json(data: Any, indent: int | None = 2) -> str:
    """`data` as JSON text, numpy and torch values included (see JSONEncoder)."""
    return json.dumps(data, cls=JSONEncoder, indent=indent)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as JSON to `path` atomically, with a trailing newline."""
    return atomic_write_text(path, to_json(data, indent) + "\n")


def format_table(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], fmt: str = "github", floatfmt: str | Sequence[str] = "g"
) -> str:
    """Rows as a text table through `tabulate` ("github" is Markdown; "plain" for terminals)."""
    from tabulate import tabulate

    return tabulate(list(rows), headers=list(headers), tablefmt=fmt, floatfmt=floatfmt)


DTYPE_NAMES = ("float32", "float64")


def torch_dtype(name: str):
    """The torch dtype of a name in DTYPE_NAMES ("float32", "float64"); a clear error for any other."""
    import torch

    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; known: {list(dtypes)}")
    return dtypes[name]


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
