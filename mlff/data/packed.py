"""A packed corpus: labelled frames in one chunked HDF5 file, read lazily (corpora larger than memory).

`mlff data pack IN... -o OUT.h5` (or `mlff data generate -o OUT.h5`) writes it; `data.path: OUT.h5`
trains from it without loading it. Layout (format "mlff-packed", version 1; eV, Angstrom):

- attrs: `format`, `format_version`, `num_frames`, `num_atoms`, `species` (sorted atomic
  numbers), `chunk_frames` (frames per chunk), `sources` (the input files).
- per frame [F]: `n_atoms` int32, `energies` float64 eV, `has_energy` bool, `equilibrium` bool;
  `extra/<key>/codes` uint32 with `extra/<key>/names` (a per-frame text key such as `method`,
  stored as codes into a table of its values; "" where a frame has none).
- per atom [A]: `atomic_numbers` uint8, `positions` [A, 3] float64 A, `forces` [A, 3] float64 eV/A,
  stored in HDF5 chunks of about one frame chunk each.
- `splits/split_train`, `splits/split_test` [K, n] when a single input file had them.

Per-frame metadata (a few tens of bytes a frame) is held in memory; atoms are read a chunk
(`chunk_frames` consecutive frames) at a time into a small cache. An epoch visits the training
frames chunk by chunk: the chunk order is shuffled, then frames are shuffled within a buffer of
`buffer_chunks` chunks (`epoch_order`), so each chunk is read once per epoch.
"""

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlff.data.batch import Batch
from mlff.data.frames import DatasetError, Frames

FORMAT = "mlff-packed"
FORMAT_VERSION = 1
PACKED_SUFFIXES = (".h5", ".hdf5")
# Frames per chunk: ~1000 small molecules is ~0.5 MB of positions and forces, one cheap read.
DEFAULT_CHUNK_FRAMES = 1024
# Chunks whose frames are shuffled together in an epoch (and held in the read cache).
DEFAULT_BUFFER_CHUNKS = 8
_PER_FRAME = ("n_atoms", "energies", "has_energy", "equilibrium")
_PER_ATOM = ("atomic_numbers", "positions", "forces")


def is_packed_path(path: str | Path) -> bool:
    """Whether `path` names a packed corpus (by its suffix: .h5 or .hdf5)."""
    return Path(path).suffix.lower() in PACKED_SUFFIXES


def _h5py():
    """h5py, or MissingDependencyError naming the extra that brings it."""
    from mlff.data.optional import MissingDependencyError

    try:
        import h5py
    except ImportError as error:
        raise MissingDependencyError(
            f"packed corpora (.h5) need the package 'h5py' ({error}); install it with: pip install 'mlff[scale]'"
        ) from error
    return h5py


class PackWriter:
    """Appends Frames to a new packed corpus; `close()` (or the `with` block) finishes it.

    The file is written under a temporary name and renamed into place on a clean close, so a
    killed pack leaves no half-written corpus at `path`.

    Args:
        path: the .h5 file to create (an existing one is replaced on close).
        chunk_frames: frames per chunk.
    """

    def __init__(self, path: str | Path, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        h5py = _h5py()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = self.path.with_name(f".{self.path.name}.partial")
        self.chunk_frames = chunk_frames
        self.file = h5py.File(self.temporary, "w")
        self.num_frames = 0
        self.num_atoms = 0
        self.species: set[int] = set()
        self.sources: list[str] = []
        self.names: dict[str, dict[str, int]] = {}
        self.splits: dict[str, np.ndarray] | None = None
        # Atom rows per HDF5 chunk: one frame chunk of molecules of ~20 atoms.
        rows = chunk_frames * 20
        specs = {
            "n_atoms": ((), np.int32, chunk_frames),
            "energies": ((), np.float64, chunk_frames),
            "has_energy": ((), np.bool_, chunk_frames),
            "equilibrium": ((), np.bool_, chunk_frames),
            "atomic_numbers": ((), np.uint8, rows),
            "positions": ((3,), np.float64, rows),
            "forces": ((3,), np.float64, rows),
        }
        for name, (tail, dtype, chunk) in specs.items():
            self.file.create_dataset(name, (0, *tail), maxshape=(None, *tail), dtype=dtype, chunks=(chunk, *tail))

    def append(self, frames: Frames) -> None:
        """Add the frames (in order) after those written so far."""
        if frames.atomic_numbers.size and frames.atomic_numbers.max() > 255:
            raise DatasetError(f"{frames.source}: atomic numbers above 255 do not fit the packed format")
        count, atoms = frames.num_frames, int(frames.offsets[-1])
        values = {
            "n_atoms": frames.n_atoms,
            "energies": frames.energies,
            "has_energy": frames.has_energy,
            "equilibrium": frames.equilibrium,
            "atomic_numbers": frames.atomic_numbers,
            "positions": frames.positions,
            "forces": frames.forces,
        }
        for name, value in values.items():
            dataset = self.file[name]
            start = dataset.shape[0]
            dataset.resize(start + len(value), axis=0)
            dataset[start:] = value
        for key, texts in frames.extra.items():
            if texts.dtype.kind in "US":
                self._append_text(key, texts.astype(str))
        for key in list(self.names):
            if key not in frames.extra or frames.extra[key].dtype.kind not in "US":
                self._append_text(key, np.full(count, "", dtype=str))
        # The input's own splits index its frames: kept only for a corpus of one input.
        self.splits = dict(frames.splits) if not self.sources else {}
        self.sources.append(frames.source)
        self.species.update(int(z) for z in np.unique(frames.atomic_numbers))
        self.num_frames += count
        self.num_atoms += atoms

    def _append_text(self, key: str, texts: np.ndarray) -> None:
        names = self.names.get(key)
        if names is None:
            # A key first seen now: earlier frames have none ("" is code 0, the fill value).
            names = self.names[key] = {"": 0}
            self.file.create_dataset(
                f"extra/{key}/codes",
                (self.num_frames,),
                maxshape=(None,),
                dtype=np.uint32,
                chunks=(self.chunk_frames,),
                fillvalue=0,
            )
        codes = np.array([names.setdefault(text, len(names)) for text in texts.tolist()], dtype=np.uint32)
        dataset = self.file[f"extra/{key}/codes"]
        start = dataset.shape[0]
        dataset.resize(start + codes.size, axis=0)
        dataset[start:] = codes

    def close(self) -> Path:
        """Write the attributes and splits, close, and move the file into place; returns its path."""
        if self.file is None:
            return self.path
        if self.num_frames == 0:
            self.abort()
            raise DatasetError(f"{self.path}: no frames to pack")
        h5py = _h5py()
        for key, names in self.names.items():
            ordered = sorted(names, key=names.get)
            self.file.create_dataset(f"extra/{key}/names", data=ordered, dtype=h5py.string_dtype())
        for name, value in (self.splits or {}).items():
            self.file.create_dataset(f"splits/{name}", data=np.asarray(value, dtype=np.int64))
        attrs = self.file.attrs
        attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            num_frames=self.num_frames,
            num_atoms=self.num_atoms,
            species=np.array(sorted(self.species), dtype=np.int64),
            chunk_frames=self.chunk_frames,
            sources=np.array(self.sources, dtype=object),
        )
        self.file.close()
        self.file = None
        self.temporary.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> "PackWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def pack(
    inputs: Sequence[str | Path],
    output: str | Path,
    energy_unit: str = "auto",
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> Path:
    """Convert dataset files (npz, extxyz, ... as `read_frames` reads them) into one packed corpus.

    Each input is read whole (one at a time), so the corpus may exceed memory but no input may.
    Frames keep their order: the inputs' frames one after another.
    """
    from mlff.data.readers import read_frames

    if not inputs:
        raise ValueError("no input files to pack")
    with PackWriter(output, chunk_frames) as writer:
        for path in inputs:
            if is_packed_path(path):
                with PackedFrames(path) as packed:
                    for chunk in range(packed.num_chunks):
                        writer.append(packed.chunk_frames_of(chunk))
            else:
                writer.append(read_frames(path, energy_unit))
    return Path(output)


class PackedFrames:
    """A packed corpus opened read-only: per-frame metadata in memory, atoms read a chunk at a time.

    It offers what training needs of `Frames` (num_frames, n_atoms, offsets, energies, has_energy,
    equilibrium, splits, extra, source, species(), summary(), frame(i), subset(indices)); atoms
    come from `chunk_arrays(k)`, which keeps the last `cache_chunks` chunks.

    Raises:
        DatasetError: the file is not an mlff packed corpus, is of a newer format, or is inconsistent.
    """

    def __init__(self, path: str | Path, cache_chunks: int = DEFAULT_BUFFER_CHUNKS + 1) -> None:
        h5py = _h5py()
        self.path = Path(path).expanduser()
        self.source = str(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"dataset not found: {self.path}")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise DatasetError(f"{self.path} is not a readable HDF5 file (truncated or corrupt?): {error}") from None
        try:
            self._load_metadata()
        except DatasetError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as error:
            self.close()
            raise DatasetError(f"{self.path}: unreadable packed corpus (truncated or corrupt?): {error}") from None
        self.cache_chunks = max(1, cache_chunks)
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def _load_metadata(self) -> None:
        attrs = self.file.attrs
        where = str(self.path)
        if attrs.get("format") != FORMAT:
            raise DatasetError(f"{where} is an HDF5 file but not an mlff packed corpus (no format={FORMAT!r})")
        version = int(attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise DatasetError(
                f"{where} is packed format version {version}; this mlff reads up to {FORMAT_VERSION} (upgrade mlff)"
            )
        missing = [name for name in (*_PER_FRAME, *_PER_ATOM) if name not in self.file]
        if missing:
            raise DatasetError(f"{where}: packed corpus lacks dataset(s) {missing}")
        self.n_atoms = self.file["n_atoms"][:].astype(np.int64)
        count, atoms = int(attrs["num_frames"]), int(attrs["num_atoms"])
        self.offsets = np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)
        checks = [
            (self.n_atoms.shape == (count,), f"n_atoms holds {self.n_atoms.size} frames, attrs say {count}"),
            (int(self.offsets[-1]) == atoms, f"n_atoms sum to {int(self.offsets[-1])} atoms, attrs say {atoms}"),
            (bool(np.all(self.n_atoms > 0)), "a frame has no atoms"),
        ]
        for name in _PER_FRAME[1:]:
            shape = self.file[name].shape
            checks.append((shape == (count,), f"{name} has shape {shape}, expected ({count},)"))
        for name, tail in (("atomic_numbers", ()), ("positions", (3,)), ("forces", (3,))):
            shape = self.file[name].shape
            checks.append((shape == (atoms, *tail), f"{name} has shape {shape}, expected {(atoms, *tail)}"))
        for ok, message in checks:
            if not ok:
                raise DatasetError(f"{where}: {message} (truncated or corrupt packed corpus?)")
        self.energies = self.file["energies"][:]
        self.has_energy = self.file["has_energy"][:].astype(bool)
        self.equilibrium = self.file["equilibrium"][:].astype(bool)
        if not np.all(np.isfinite(self.energies)):
            raise DatasetError(f"{where}: energies contain NaN or inf")
        self._species = [int(z) for z in attrs["species"]]
        self.chunk_frames = int(attrs["chunk_frames"])
        if self.chunk_frames < 1:
            raise DatasetError(f"{where}: chunk_frames is {self.chunk_frames}")
        self.splits = {name: self.file[f"splits/{name}"][:] for name in self.file.get("splits", {})}
        for name, indices in self.splits.items():
            if indices.size and (indices.min() < 0 or indices.max() >= count):
                raise DatasetError(f"{where}: split {name!r} indexes frames outside 0..{count - 1}")
        self.extra: dict[str, np.ndarray] = {}
        for key in self.file.get("extra", {}):
            names = np.array([n.decode() if isinstance(n, bytes) else n for n in self.file[f"extra/{key}/names"][:]])
            codes = self.file[f"extra/{key}/codes"][:]
            if codes.shape != (count,) or (codes.size and codes.max() >= names.size):
                raise DatasetError(f"{where}: extra/{key} codes do not match its frames or names")
            self.extra[key] = names[codes]

    @property
    def num_frames(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.num_frames / self.chunk_frames)

    def __len__(self) -> int:
        return self.num_frames

    def species(self) -> list[int]:
        """Sorted unique atomic numbers (recorded when packed)."""
        return list(self._species)

    def summary(self) -> dict[str, Any]:
        """The same description as `Frames.summary`, from the metadata alone."""
        return {
            "source": self.source,
            "frames": self.num_frames,
            "species": self.species(),
            "atoms_per_frame": sorted({int(n) for n in np.unique(self.n_atoms)}),
            "equilibrium_frames": int(self.equilibrium.sum()),
            "frames_with_energy": int(self.has_energy.sum()),
            "packed": True,
        }

    def chunk_arrays(self, chunk: int) -> dict[str, np.ndarray]:
        """Atom arrays of chunk `chunk` (frames chunk*chunk_frames onwards): atomic_numbers, positions, forces.

        The arrays hold the atom rows offsets[first]:offsets[last + 1]; recently used chunks are cached.
        """
        cached = self._cache.get(chunk)
        if cached is not None:
            self._cache.move_to_end(chunk)
            return cached
        if not 0 <= chunk < self.num_chunks:
            raise IndexError(f"chunk {chunk} outside 0..{self.num_chunks - 1}")
        first = chunk * self.chunk_frames
        last = min(first + self.chunk_frames, self.num_frames)
        lo, hi = int(self.offsets[first]), int(self.offsets[last])
        try:
            arrays = {name: self.file[name][lo:hi] for name in _PER_ATOM}
        except OSError as error:
            raise DatasetError(f"{self.path}: chunk {chunk} is unreadable (truncated or corrupt?): {error}") from None
        arrays["atomic_numbers"] = arrays["atomic_numbers"].astype(np.int64)
        self._cache[chunk] = arrays
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return arrays

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """(atomic_numbers [n], positions [n, 3] A, energy eV, forces [n, 3] eV/A) of one frame."""
        arrays = self.chunk_arrays(index // self.chunk_frames)
        base = self.offsets[(index // self.chunk_frames) * self.chunk_frames]
        lo, hi = self.offsets[index] - base, self.offsets[index + 1] - base
        return (
            arrays["atomic_numbers"][lo:hi],
            arrays["positions"][lo:hi],
            float(self.energies[index]),
            arrays["forces"][lo:hi],
        )

    def atom_rows(self, frame_indices: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """(targets, sources, arrays) for each chunk the frames touch, for gathering their atoms.

        `arrays` are the chunk's atom arrays, `sources` the rows of the given frames within them and
        `targets` where those rows go in the concatenation of the frames' atoms (in the given order).
        """
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        counts = self.n_atoms[frame_indices]
        destination = np.concatenate([[0], np.cumsum(counts)])
        chunks = frame_indices // self.chunk_frames
        for chunk in np.unique(chunks):
            members = np.flatnonzero(chunks == chunk)
            base = self.offsets[int(chunk) * self.chunk_frames]
            sources = np.concatenate(
                [np.arange(self.offsets[f] - base, self.offsets[f + 1] - base) for f in frame_indices[members]]
            )
            targets = np.concatenate([np.arange(destination[m], destination[m + 1]) for m in members])
            yield targets, sources, self.chunk_arrays(int(chunk))

    def gather(self, frame_indices: np.ndarray) -> dict[str, np.ndarray]:
        """The atom arrays of the given frames, concatenated in their order."""
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        total = int(self.n_atoms[frame_indices].sum())
        out = {
            "atomic_numbers": np.empty(total, np.int64),
            "positions": np.empty((total, 3), np.float64),
            "forces": np.empty((total, 3), np.float64),
        }
        for targets, sources, arrays in self.atom_rows(frame_indices):
            for name, array in out.items():
                array[targets] = arrays[name][sources]
        return out

    def subset(self, frame_indices: np.ndarray) -> Frames:
        """The given frames as an in-memory Frames (splits dropped)."""
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        atoms = self.gather(frame_indices)
        return Frames(
            positions=atoms["positions"],
            atomic_numbers=atoms["atomic_numbers"],
            n_atoms=self.n_atoms[frame_indices],
            energies=self.energies[frame_indices],
            forces=atoms["forces"],
            source=self.source,
            extra={key: value[frame_indices] for key, value in self.extra.items()},
            equilibrium=self.equilibrium[frame_indices],
            has_energy=self.has_energy[frame_indices],
        )

    def chunk_frames_of(self, chunk: int) -> Frames:
        """The frames of one chunk as Frames."""
        first = chunk * self.chunk_frames
        return self.subset(np.arange(first, min(first + self.chunk_frames, self.num_frames)))

    def to_frames(self) -> Frames:
        """The whole corpus in memory (for small corpora and tools that need Frames)."""
        frames = self.subset(np.arange(self.num_frames))
        frames.splits = dict(self.splits)
        return frames

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> "PackedFrames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("PackedFrames holds an open HDF5 file: open the path in each process instead")


def read_packed(path: str | Path) -> Frames:
    """A packed corpus read whole into memory as Frames (`read_frames` of a .h5 file)."""
    with PackedFrames(path) as packed:
        return packed.to_frames()


def epoch_order(
    chunk_frames: int, train: np.ndarray, seed: int, epoch: int, buffer_chunks: int = DEFAULT_BUFFER_CHUNKS
) -> np.ndarray:
    """The training frames' order for one epoch, drawn from (seed, epoch): chunk order shuffled,
    then frames shuffled within each buffer of `buffer_chunks` consecutive (shuffled) chunks.

    Every process computes the same order (it needs no data), so data-parallel ranks share it
    and each takes its slice of every global batch.
    """
    rng = np.random.default_rng([seed, epoch])
    train = np.asarray(train, dtype=np.int64)
    chunks = train // chunk_frames
    present = np.unique(chunks)
    by_chunk = _group(train, chunks)
    shuffled = rng.permutation(present)
    parts = []
    for start in range(0, shuffled.size, buffer_chunks):
        members = np.concatenate([by_chunk[int(c)] for c in shuffled[start : start + buffer_chunks]])
        parts.append(rng.permutation(members))
    return np.concatenate(parts) if parts else train[:0]


def _group(train: np.ndarray, chunks: np.ndarray) -> dict[int, np.ndarray]:
    """Frames by chunk in one sort (for many chunks)."""
    order = np.argsort(chunks, kind="stable")
    keys, starts = np.unique(chunks[order], return_index=True)
    pieces = np.split(train[order], starts[1:])
    return {int(k): piece for k, piece in zip(keys, pieces)}


class PackedTensors:
    """Batches of a packed corpus, read lazily: the `FrameTensors` interface (batch, batches, n_atoms).

    Args:
        frames: the opened corpus (its in-memory has_energy / equilibrium flags are used).
        dtype: floating dtype of positions and forces (energies stay float64).
        device: where batches live.
    """

    def __init__(self, frames: PackedFrames, dtype: torch.dtype = torch.float32, device: Any = "cpu") -> None:
        self.frames = frames
        self.dtype = dtype
        self.device = torch.device(device)
        self.n_atoms = torch.as_tensor(frames.n_atoms, dtype=torch.long, device=self.device)

    def batch(self, frame_indices: np.ndarray) -> Batch:
        """The given frames as one Batch, in the given order."""
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        atoms = self.frames.gather(frame_indices)
        count = int(frame_indices.size)
        n_atoms = torch.as_tensor(self.frames.n_atoms[frame_indices], device=self.device)
        device, dtype = self.device, self.dtype
        return Batch(
            positions=torch.as_tensor(atoms["positions"], dtype=dtype, device=device),
            atomic_numbers=torch.as_tensor(atoms["atomic_numbers"], device=device),
            batch=torch.repeat_interleave(torch.arange(count, device=device), n_atoms),
            cell=torch.zeros(count, 3, 3, dtype=dtype, device=device),
            pbc=torch.zeros(count, 3, dtype=torch.bool, device=device),
            energies=torch.as_tensor(self.frames.energies[frame_indices], dtype=torch.float64, device=device),
            forces=torch.as_tensor(atoms["forces"], dtype=dtype, device=device),
            n_atoms=n_atoms,
            equilibrium=torch.as_tensor(self.frames.equilibrium[frame_indices], device=device),
            has_energy=torch.as_tensor(self.frames.has_energy[frame_indices], device=device),
        )

    def batches(self, frame_indices: np.ndarray, batch_size: int) -> Iterator[Batch]:
        """Consecutive Batches over the given frames, in the order given."""
        for start in range(0, len(frame_indices), batch_size):
            yield self.batch(frame_indices[start : start + batch_size])

    def epoch_order(self, train: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        """The chunk-then-buffer shuffled order of one epoch (`epoch_order`)."""
        return epoch_order(self.frames.chunk_frames, train, seed, epoch)


def streaming_reference_fit(
    frames: PackedFrames, frame_indices: Iterable[int] | np.ndarray, species: list[int]
) -> tuple[list[float], float]:
    """Per-element reference energies (eV) and force RMS (eV/A) in one pass over the chunks.

    The same numbers as `mlff.training.references.fit_element_energies` and `force_rms` on the
    same frames in memory: the energies solve the normal equations (C^T C) e = C^T E of the
    per-frame compositions C with the pseudo-inverse, which is the minimum-norm least-squares
    solution lstsq returns (C^T C is exact: integer counts); the RMS sums squares chunk by chunk.
    """
    frame_indices = np.unique(np.asarray(frame_indices, dtype=np.int64))
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[species] = np.arange(len(species))
    gram = np.zeros((len(species), len(species)))
    rhs = np.zeros(len(species))
    labelled = 0
    square_sum, components = 0.0, 0
    chunks = frame_indices // frames.chunk_frames
    for chunk in np.unique(chunks):
        members = frame_indices[chunks == chunk]
        atoms = frames.gather(members)
        frame_of_atom = np.repeat(np.arange(members.size), frames.n_atoms[members])
        counts = np.zeros((members.size, len(species)))
        np.add.at(counts, (frame_of_atom, lookup[atoms["atomic_numbers"]]), 1.0)
        with_energy = frames.has_energy[members]
        gram += counts[with_energy].T @ counts[with_energy]
        rhs += counts[with_energy].T @ frames.energies[members][with_energy]
        labelled += int(with_energy.sum())
        moving = ~frames.equilibrium[members][frame_of_atom]
        square_sum += float(np.sum(atoms["forces"][moving] ** 2))
        components += 3 * int(moving.sum())
    if labelled == 0:
        energies = [0.0] * len(species)
    else:
        # Integer compositions make the Gram matrix exact; its null space (e.g. one molecule) is cut by rcond.
        energies = [float(v) for v in np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ rhs]
    rms = math.sqrt(square_sum / components) if components else 1.0
    return energies, (rms if rms > 0.0 else 1.0)
